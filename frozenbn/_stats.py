"""What one statistics pass measures (recalibrate, audit, PreciseBN).

Each measured BN layer's `call` is replaced (on the instance, for the pass)
by one that takes the moments of its input about a shift (its first input
position, so float32 stays exact when `|mean| >> std`) and pools them on the
device batch after batch; `frozenbn._compile.Step` runs each batch compiled.
"""

import functools
import inspect
import threading
from typing import Dict
from typing import List
from typing import Optional

import keras
import numpy as np
from keras import ops

from frozenbn import _compile
from frozenbn import _keras_private
from frozenbn import _math
from frozenbn import _walk
from frozenbn._backend import native
from frozenbn.layers import Frozen

# How each measured BN layer normalizes during a statistics pass.
BATCH = "batch"  # with the current batch's statistics (BN in `fit`)
AS_IN_FIT = "as_in_fit"  # batch or moving statistics, as `fit` would

_PROGRAMS_ATTRIBUTE = "_frozenbn_statistics_programs"
_PROGRAMS_PER_MODEL = 4


def measurable_layers(model, include, logger, consequence: str = ""):
    """`(layers, skipped)`: the BN layers of `model` a pass can measure, and
    how many custom subclasses it leaves, each named in a warning."""
    layers, skipped = [], 0
    for layer in _walk.batch_norm_layers(model, include):
        reason = _walk.custom_batch_norm_reason(layer)
        if reason is None:
            layers.append(layer)
            continue
        skipped += 1
        logger.warning("%s: skipped BatchNormalization layer '%s', %s%s.",
                       logger.name.rsplit(".", 1)[-1], layer.name, reason,
                       consequence)
    return layers, skipped


def uses_batch_statistics_in_fit(model: keras.layers.Layer) -> Dict[int, bool]:
    """For each BN layer id: does `fit` normalize it with batch statistics?

    Not for `frozen=True`, `trainable=False` or an active `Frozen` wrapper.
    A `training=False` recorded in a Functional graph does not count: Keras 3
    hands `fit`'s `training=True` to every layer that takes `training`.
    """
    forced = set()
    for layer in _keras_private.iter_layers(model):
        if isinstance(layer, Frozen) and layer.frozen:
            forced.update(id(bn) for bn in _walk.batch_norm_layers(layer))
    return {
        id(bn): bool(
            bn.trainable
            and not getattr(bn, "frozen", False)
            and id(bn) not in forced
        )
        for bn in _walk.batch_norm_layers(model)
    }


class PooledStatistics:
    """Pooled moments per BN layer: `self[layer]` is a `PooledMoments`
    (with `mean` None for a layer the forward pass never called)."""

    def __init__(self, layers: list, moments: List[_math.PooledMoments]):
        self._pooled = {id(layer): m for layer, m in zip(layers, moments)}

    def __getitem__(self, layer) -> _math.PooledMoments:
        return self._pooled[id(layer)]

    def called(self, layer) -> bool:
        """Whether the forward pass called `layer` on at least one input."""
        return self[layer].mean is not None


def check_finite_statistics(layers: list, bad: list, order: list) -> None:
    """Raises a `ValueError` naming the earliest batch with NaN/inf moments
    and its first layer called (`order`); `bad[i]` is `layers[i]`'s first
    bad batch, -1 for none, `REMOTE_BAD` for another replica."""

    def position(i):
        return order.index(i) if i in order else len(order)

    local = [i for i, b in enumerate(bad) if b >= 0]
    remote = [i for i, b in enumerate(bad) if b == native.REMOTE_BAD]
    if local:
        batch = min(bad[i] for i in local)
        first = min((i for i in local if bad[i] == batch), key=position)
        where = f"Batch {batch} of the data gives"
    elif remote:
        first = min(remote, key=position)
        where = "The data of another replica or worker gives"
    else:
        return
    raise ValueError(
        f"{where} non-finite statistics (NaN or inf) at BatchNormalization "
        f"layer '{layers[first].name}': the data or the activations before "
        "that layer contain NaN or inf values (check with "
        "`np.isfinite(x).all()`), or overflow the layer's dtype. No "
        "statistics were changed."
    )


class StatisticsPass:
    """Measures the input statistics of `layers` over a stream of batches.

    A context manager: the measuring calls are on the layers inside the
    `with` block only; `step(x)` runs one batch, `result()` ends the pass.
    No variable is written. Measured layers normalize with batch statistics
    (`mode=BATCH`) or as `fit` would (`AS_IN_FIT`, given `batch_in_fit`);
    other layers run in inference mode. With `outputs=True`, `step` returns
    the model's outputs `(as_in_fit, inference)`; otherwise None, and the
    compiled step skips the layers after the last BN.
    """

    def __init__(
        self,
        model,
        layers: list,
        mode: str = BATCH,
        batch_in_fit: Optional[Dict[int, bool]] = None,
        outputs: bool = False,
    ):
        self._model = model
        self._program = _program(
            model, list(layers), mode, batch_in_fit or {}, outputs
        )
        self._saved = []
        self._state = None
        self._steps = 0

    def __enter__(self):
        try:
            for layer in self._program.layers:
                original = layer.__dict__.get("call")
                self._saved.append((layer, original))
                _set_call(
                    layer,
                    self._program.measuring_call(
                        layer, original or type(layer).call.__get__(layer)
                    ),
                )
            if self._program.mode == AS_IN_FIT:
                # The model runs with `training=True`: keep every other
                # layer that `training` changes (dropout, noise and
                # augmentation layers, BN layers not measured) in inference
                # mode.
                measured = {id(layer) for layer in self._program.layers}
                for layer in _keras_private.iter_layers(self._model):
                    if id(layer) in measured or not _inference_during_pass(
                        layer
                    ):
                        continue
                    original = layer.__dict__.get("call")
                    self._saved.append((layer, original))
                    _set_call(
                        layer,
                        _in_inference(original or type(layer).call.__get__(layer)),
                    )
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info):
        self._restore()
        return False

    @property
    def eager(self) -> bool:
        """Whether the pass runs eagerly (no compiled step)."""
        return self._program.step.eager

    def step(self, x):
        """Runs batch `x`; returns the outputs if asked for, else None."""
        if self._state is None:
            self._state = self._program.initial_state(x)
        self._state, outputs = self._program.step(self._state, x, self._steps)
        self._steps += 1
        return outputs

    def result(self) -> PooledStatistics:
        """The pooled statistics; raises `ValueError` for NaN/inf moments."""
        program = self._program
        count, shift, mean, m2, bad = program.step.finish(self._state)
        firsts = []
        for start, stop in program.slices:
            seen = bad[start:stop]
            local = seen[seen >= 0]
            remote = np.any(seen == native.REMOTE_BAD)
            firsts.append(int(local.min()) if local.size else
                          native.REMOTE_BAD if remote else -1)
        check_finite_statistics(program.layers, firsts, program.order)
        return PooledStatistics(
            program.layers,
            [
                _math.PooledMoments.from_state(
                    count[start] if stop > start else 0.0,
                    np.asarray(shift[start:stop], np.float64)
                    + mean[start:stop],
                    m2[start:stop],
                )
                for start, stop in program.slices
            ],
        )

    def _restore(self):
        while self._saved:
            layer, original = self._saved.pop()
            if original is None:
                _del_call(layer)
            else:
                _set_call(layer, original)


def _program(model, layers, mode, batch_in_fit, outputs):
    """The `_Program` for this configuration, cached on the model like
    Keras's `predict_function` so repeated passes compile once."""
    key = (
        mode,
        outputs,
        tuple(
            (id(layer), type(layer), batch_in_fit.get(id(layer), True))
            for layer in layers
        ),
        native.placement(model),
        getattr(model, "run_eagerly", None),
        getattr(model, "jit_compile", None),
    )
    programs = model.__dict__.get(_PROGRAMS_ATTRIBUTE)
    if programs is None:
        programs = {}
        object.__setattr__(model, _PROGRAMS_ATTRIBUTE, programs)
    program = programs.get(key)
    if program is None:
        while len(programs) >= _PROGRAMS_PER_MODEL:
            programs.pop(next(iter(programs)))
        program = programs[key] = _Program(
            model, layers, mode, batch_in_fit, outputs
        )
    return program


class _Program:
    """A measuring forward pass and its compiled step, for one model.

    The state is five flat tensors over all layers' channels, layer `i` at
    `slices[i]`: `(count, shift, mean, m2, first_bad_batch)`, so one update
    pools every layer (per call of a layer within a batch).
    """

    def __init__(self, model, layers, mode, batch_in_fit, outputs):
        self.layers = layers
        self.order = []  # layer indices, in the order of their first call
        self._index = {id(layer): i for i, layer in enumerate(layers)}
        self.mode = mode
        self._batch_in_fit = batch_in_fit
        self._outputs = outputs
        self.slices = []  # (start, stop) of each layer in the flat state
        # Per thread: MirroredStrategy runs each replica in its own thread.
        self._local = threading.local()
        self.step = _compile.Step(model, self._body)

    def initial_state(self, x):
        """Zero statistics, placed for the steps; builds the model if needed."""
        if not all(layer.built for layer in self.layers):
            # A model built on its first call: build it outside the
            # compiled step, which must not create variables.
            self.step.build(x)
        self.slices, start = [], 0
        for layer in self.layers:
            # A layer still unbuilt is never called: no channels to pool.
            stop = start + (int(layer.moving_mean.shape[0]) if layer.built else 0)
            self.slices.append((start, stop))
            start = stop
        zeros = np.zeros(start, "float32")
        return self.step.init_state(
            (zeros, zeros, zeros, zeros, np.full(start, -1, "int32")))

    def _body(self, run_model, state, x, batch_index):
        local = self._local
        local.state = state
        local.calls = []
        try:
            # As in `fit`: the model is called with `training=True`, so that
            # layers which pass their own `training` default on (keras-hub
            # blocks default to False) hand BN what `fit` hands it. In BATCH
            # mode every measured layer uses batch statistics anyway, and
            # `training=False` keeps the others in inference mode (Keras's
            # augmentation layers default to `training=True`).
            fit_outputs = run_model(x, training=self.mode == AS_IN_FIT)
            calls, local.calls = local.calls, None
            inference_outputs = None
            if self._outputs:
                inference_outputs = run_model(x, training=False)
        finally:
            local.calls = local.state = None
        while calls:
            # One update for the first call of every layer, then one for
            # the second calls of layers called twice, and so on.
            now, later = {}, []
            for call in calls:
                if call[0] in now:
                    later.append(call)
                else:
                    now[call[0]] = call
            state = self._pool(state, now, batch_index)
            calls = later
        if not self._outputs:
            return state, None
        return state, (fit_outputs, inference_outputs)

    def _pool(self, state, calls, batch_index):
        """`state` with `calls` (`{layer index: one call's moments}`) pooled
        in, all layers in one update; layers not in `calls` are unchanged."""
        n, old_shift, mu, m2, bad = state
        means, variances, counts, shifts = [], [], [], []
        for index, (start, stop) in enumerate(self.slices):
            if index in calls:
                _, mean, var, count, shift = calls[index]
                count = ops.cast(count, "float32")
            else:
                mean = var = shift = ops.zeros((stop - start,), "float32")
                count = ops.zeros((), "float32")
            means.append(ops.cast(mean, "float32"))
            variances.append(ops.cast(var, "float32"))
            counts.append(ops.broadcast_to(count, (stop - start,)))
            shifts.append(ops.cast(shift, "float32"))
        mean, var, nb, shift = (ops.concatenate(parts) for parts in
                                (means, variances, counts, shifts))
        finite = ops.logical_and(ops.isfinite(mean), ops.isfinite(var))
        bad = ops.where(
            ops.logical_and(
                bad < 0, ops.logical_and(nb > 0, ops.logical_not(finite))
            ),
            ops.cast(batch_index, "int32"),
            bad,
        )
        # The first batch a layer sees fixes its shift; a second call in
        # that batch may have taken another one: re-express its mean.
        new_shift = ops.where(ops.logical_and(n <= 0, nb > 0), shift, old_shift)
        mean = mean + (shift - new_shift)
        n, mu, m2 = _math.pool_moments((n, mu, m2), mean, var, nb)
        return n, new_shift, mu, m2, bad

    def measuring_call(self, layer, original):
        index = self._index[id(layer)]
        local, order, mode = self._local, self.order, self.mode
        batch_in_fit = self._batch_in_fit.get(id(layer), True)

        def call(inputs, training=None, mask=None):
            calls = getattr(local, "calls", None)
            if calls is None:  # not measuring: the layer's own call
                return original(inputs, training=training, mask=mask)
            if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
                mask = None  # Keras BN raises here; statistics ignore it.
            dtype = keras.backend.result_type(inputs.dtype, "float32")
            x = ops.cast(inputs, dtype)
            start, stop = self.slices[index]
            count_so_far = local.state[0][start]
            shift = local.state[1][start:stop]
            shift = ops.where(
                count_so_far > 0,
                shift,
                ops.cast(_first_position(x, layer.axis), "float32"),
            )
            shifted = x - _channel_vector(ops.cast(shift, dtype), x, layer.axis)
            batch_normalizes = mode == BATCH or (
                batch_in_fit and training is not False
            )
            fused = None
            if mask is None and batch_normalizes and not layer.synchronized:
                fused = native.fused_normalization(
                    shifted,
                    layer.axis,
                    _cast(layer.gamma, dtype),
                    _cast(layer.beta, dtype),
                    layer.epsilon,
                )
            if fused is not None:
                outputs, offset, var, count = fused
            else:
                offset, var, count = _math.batch_moments(
                    shifted, layer.axis, mask
                )
            calls.append((index, offset, var, count, shift))
            if index not in order:
                order.append(index)
            if fused is not None:
                return ops.cast(outputs, layer.compute_dtype)
            if batch_normalizes:
                mean = ops.cast(shift, offset.dtype) + offset
                mean, var = _normalizing_moments(layer, mean, var, count)
            else:
                mean, var = layer.moving_mean, layer.moving_variance
            outputs = ops.batch_normalization(
                x,
                ops.cast(mean, dtype),
                ops.cast(var, dtype),
                axis=layer.axis,
                offset=_cast(layer.beta, dtype),
                scale=_cast(layer.gamma, dtype),
                epsilon=layer.epsilon,
            )
            return ops.cast(outputs, layer.compute_dtype)

        return call


def _first_position(x, axis):
    """The channel values at `x`'s first position (zeros for an empty batch)."""
    rank = len(x.shape)
    axis = axis % rank
    first = x[
        tuple(slice(None) if i == axis else slice(0, 1) for i in range(rank))
    ]
    return ops.sum(first, axis=[i for i in range(rank) if i != axis])


def _cast(variable, dtype):
    return None if variable is None else ops.cast(variable, dtype)


def _channel_vector(vector, x, axis):
    """`vector` (one value per channel) shaped to broadcast against `x`."""
    shape = [1] * len(x.shape)
    shape[axis] = -1
    return ops.reshape(vector, shape)


def _normalizing_moments(layer, mean, var, count):
    """The batch moments `fit` normalizes with: the global batch's for
    `synchronized=True` layers under `tf.distribute`, else the replica's."""
    sum_all = native.cross_replica_sum() if layer.synchronized else None
    if sum_all is None:
        return mean, var
    n = ops.cast(count, mean.dtype) * ops.ones_like(mean)
    total, mean, m2 = _math.all_reduce_moments(n, mean, var * n, sum_all)
    return mean, m2 / ops.maximum(total, 1.0)


# Layers that `training=True` changes besides BatchNormalization; during an
# `AS_IN_FIT` pass they run in inference mode, and so does every layer without
# sublayers whose `call` defaults to `training=True`: Keras's augmentation
# layers (RandomFlip, RandomRotation, ...) and custom ones written the same
# way. (Custom stochastic layers that default to inference, such as
# keras-hub's DropPath, and blocks that hold BN layers run as in training.)
_INFERENCE_DURING_PASS = (
    _walk.KERAS_BATCH_NORMALIZATION,
    keras.layers.Dropout,  # and SpatialDropout1D/2D/3D
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)


def _inference_during_pass(layer) -> bool:
    if isinstance(layer, _INFERENCE_DURING_PASS):
        return True
    return _defaults_to_training(type(layer)) and not _keras_private.children(
        layer
    )


@functools.lru_cache(maxsize=None)
def _defaults_to_training(layer_class) -> bool:
    try:
        parameter = inspect.signature(layer_class.call).parameters.get(
            "training"
        )
    except (TypeError, ValueError):  # a call without a signature
        return False
    return parameter is not None and parameter.default is True


def _in_inference(call):
    def inference_call(*args, training=None, **kwargs):
        return call(*args, training=False, **kwargs)

    return inference_call


def _set_call(layer, fn) -> None:
    # Bypass Layer.__setattr__'s tracking (and torch.nn.Module's): a plain
    # instance attribute shadows the class's `call`.
    object.__setattr__(layer, "call", fn)


def _del_call(layer) -> None:
    if "call" in layer.__dict__:
        object.__delattr__(layer, "call")
