"""One statistics pass over a model's BatchNormalization layers.

Shared by `recalibrate` (which writes the result) and `audit` (which
compares it with the moving statistics). A `StatisticsPass` routes the
selected BN layers through a measuring `call` that computes each input's
per-channel moments (`frozenbn._math.batch_moments`) and normalizes as
`fit` would; the moments are pooled on the device, batch after batch, with
Chan's update (`frozenbn._math.pool_moments`), inside one compiled step per
batch (`frozenbn._compile.Step`: `tf.function`, `jax.jit`, torch without
autograd). Nothing is copied to the host until the pass ends; then the
states of all replicas and workers are pooled, checked for NaN/inf and
returned as float64 `PooledMoments`.
"""

from typing import Dict
from typing import List
from typing import Optional

import keras
import numpy as np

from frozenbn import _distribute
from frozenbn import _math
from frozenbn import _measure
from frozenbn import _walk
from frozenbn.layers import Frozen

# How each measured BN layer normalizes during a statistics pass.
BATCH = _measure.BATCH  # with the current batch's statistics (BN in `fit`)
AS_IN_FIT = _measure.AS_IN_FIT  # batch or moving statistics, as `fit` would

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

    False for `frozen=True` frozenbn layers, `trainable=False` layers (the
    Keras rule) and layers inside an active `frozenbn.Frozen` wrapper. A
    `training=False` recorded in a Functional graph does not count: Keras 3
    hands `fit`'s `training=True` to every layer of the graph that takes a
    `training` argument, recorded value or not.
    """
    forced = set()
    for layer in _walk.iter_layers(model):
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
    """The result of a `StatisticsPass`: pooled moments per BN layer.

    `self[layer]` is that layer's `frozenbn._math.PooledMoments` (empty, with
    `mean` None, for a layer the forward pass never called).
    """

    def __init__(self, layers: list, moments: List[_math.PooledMoments]):
        self._pooled = {id(layer): m for layer, m in zip(layers, moments)}

    def __getitem__(self, layer) -> _math.PooledMoments:
        return self._pooled[id(layer)]

    def called(self, layer) -> bool:
        """Whether the forward pass called `layer` on at least one input."""
        return self[layer].mean is not None


def check_finite_statistics(layers: list, bad: list, order: list) -> None:
    """Raises a `ValueError` if some batch gave NaN or inf moments.

    `bad[i]` is the first batch at which `layers[i]` saw non-finite moments
    (-1: none; `_distribute.REMOTE_BAD`: on another replica or worker only);
    `order` lists layer indices in the order the forward pass calls them.
    The error names the earliest batch and, in it, the first layer called:
    NaN or inf in the data or in the activations upstream. It is raised
    before anything is written, so the model is left unchanged.
    """

    def position(i):
        return order.index(i) if i in order else len(order)

    local = [i for i, b in enumerate(bad) if b >= 0]
    remote = [i for i, b in enumerate(bad) if b == _distribute.REMOTE_BAD]
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
    """Measures the input statistics of BN layers over a stream of batches.

    Use as a context manager: inside the `with` block each given layer's
    `call` is replaced, on the instance only, by a measuring one; on exit
    (even after an error) the original is put back. `step(x)` runs one
    batch; `result()` ends the pass. The layers' variables are never
    written. In the forward pass each measured layer normalizes:

    - `mode=BATCH`: with the batch's statistics (the replica's batch, or
      the global batch for `synchronized=True` layers, as in `fit`);
    - `mode=AS_IN_FIT`: with the batch's statistics where `fit` would (see
      `uses_batch_statistics_in_fit`) unless the call receives
      `training=False`, otherwise with the moving statistics.

    Other layers run in inference mode (`training` is left unset).

    Args:
        model: The model to run.
        layers: The BN layers to measure (exact Keras/frozenbn classes, see
            `measurable_layers`).
        mode: `BATCH` or `AS_IN_FIT`.
        batch_in_fit: `uses_batch_statistics_in_fit(model)`, for `AS_IN_FIT`.
        outputs: Whether `step` returns the model's outputs `(as_in_fit,
            inference)`; otherwise it returns None and the compiled step
            skips the layers after the last BN layer.
        distribute: Whether to spread batches over the replicas or devices
            of the model's distribution and pool across workers.
    """

    def __init__(
        self,
        model,
        layers: list,
        mode: str = BATCH,
        batch_in_fit: Optional[Dict[int, bool]] = None,
        outputs: bool = False,
        distribute: bool = True,
    ):
        self._model = model
        self._program = _program(
            model, list(layers), mode, batch_in_fit or {}, outputs, distribute
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
                # layer that `training` changes (Keras's dropout and noise
                # layers, BN layers not measured) in inference mode.
                measured = {id(layer) for layer in self._program.layers}
                for layer in _walk.iter_layers(self._model):
                    if id(layer) in measured or not isinstance(
                        layer, _INFERENCE_DURING_PASS
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
        pooled = program.step.finish(self._state)
        check_finite_statistics(
            program.layers, [int(p[4]) for p in pooled], program.order
        )
        return PooledStatistics(
            program.layers,
            [
                _math.PooledMoments.from_state(
                    count, np.asarray(shift, np.float64) + mean, m2
                )
                for count, shift, mean, m2, _ in pooled
            ],
        )

    def _restore(self):
        while self._saved:
            layer, original = self._saved.pop()
            if original is None:
                _del_call(layer)
            else:
                _set_call(layer, original)


def _program(model, layers, mode, batch_in_fit, outputs, distribute):
    """The cached `_Program` for this model and configuration, or a new one.

    Cached on the model, like Keras's own `predict_function`, so repeated
    passes (`callbacks.PreciseBN` every epoch) trace and compile once.
    Everything a trace depends on is in the key.
    """
    key = (
        mode,
        outputs,
        distribute,
        tuple(
            (id(layer), type(layer), batch_in_fit.get(id(layer), True))
            for layer in layers
        ),
        _distribute.placement(model) if distribute else None,
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
        program = programs[key] = _measure.Program(
            model, layers, mode, batch_in_fit, outputs, distribute
        )
    return program


# Layers that `training=True` changes besides BatchNormalization; during an
# `AS_IN_FIT` pass they run in inference mode. (Custom stochastic layers,
# such as keras-hub's DropPath, run as in training.)
_INFERENCE_DURING_PASS = (
    _walk.KERAS_BATCH_NORMALIZATION,
    keras.layers.Dropout,  # and SpatialDropout1D/2D/3D
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
)


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
