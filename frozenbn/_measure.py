"""The measuring forward pass of a statistics pass (see `frozenbn._stats`).

Each measured BN layer's `call` is replaced by one that takes the
per-channel moments of its input about a shift (the first input position
it ever saw, so float32 is exact even when `|mean| >> std`), hands them to
the step, and normalizes as `fit` would. The step body then pools every
call's moments into the layer's state with Chan's update
(`frozenbn._math.pool_moments`) and records the first batch that gave NaN
or inf moments. Everything here runs inside the compiled step: the Python
code runs when the step is traced, once per input shape.
"""

import threading

import keras
import numpy as np
from keras import ops

from frozenbn import _compile
from frozenbn import _distribute
from frozenbn import _math

# How each measured BN layer normalizes during a statistics pass.
BATCH = "batch"  # with the current batch's statistics (BN in `fit`)
AS_IN_FIT = "as_in_fit"  # batch or moving statistics, as `fit` would


class Program:
    """A measuring forward pass and its compiled step, for one model.

    `measuring_call(layer, original)` makes the `call` that a
    `StatisticsPass` puts on each measured layer; `step(state, x, index)`
    runs one batch (see `frozenbn._compile.Step`); `initial_state(x)` is
    the zero state. `order` lists layer indices in the order the forward
    pass first calls them (filled while tracing).
    """

    def __init__(self, model, layers, mode, batch_in_fit, outputs, distribute):
        self.layers = layers
        self.order = []  # layer indices, in the order of their first call
        self._index = {id(layer): i for i, layer in enumerate(layers)}
        self._mode = mode
        self.mode = mode
        self._batch_in_fit = batch_in_fit
        self._outputs = outputs
        # Per thread: MirroredStrategy runs each replica in its own thread.
        self._local = threading.local()
        self.step = _compile.Step(model, self._body, distribute)

    def initial_state(self, x):
        """Zero statistics, placed for the steps; builds the model if needed.

        Per layer: `(count, shift, mean, m2, first_bad_batch)`, `mean` and
        `m2` being taken about `shift`, a value of the data (the first
        input position seen) so that float32 loses nothing when the mean
        is large (see `frozenbn._math.pool_moments`).
        """
        if not all(layer.built for layer in self.layers):
            # A model built on its first call: build it outside the
            # compiled step, which must not create variables.
            self.step.build(x)

        def zeros(layer):
            # A layer still unbuilt is never called: no channels to pool.
            channels = layer.moving_mean.shape if layer.built else 0
            return np.zeros(channels, "float32")

        return self.step.init_state(
            tuple(
                (np.float32(0), *(zeros(layer),) * 3, np.int32(-1))
                for layer in self.layers
            )
        )

    def _body(self, run_model, state, x, batch_index):
        local = self._local
        local.state = state
        local.calls = []
        try:
            # As in `fit`: the model is called with `training=True`, so that
            # layers which pass their own `training` default on (keras-hub
            # blocks default to False) hand BN what `fit` hands it. In BATCH
            # mode every measured layer uses batch statistics anyway.
            if self._mode == AS_IN_FIT:
                fit_outputs = run_model(x, training=True)
            else:
                fit_outputs = run_model(x)
            calls, local.calls = local.calls, None
            inference_outputs = None
            if self._outputs:
                inference_outputs = run_model(x, training=False)
        finally:
            local.calls = local.state = None
        new = list(state)
        for index, mean, var, count, shift in calls:
            n, old_shift, mu, m2, bad = new[index]
            nb = ops.cast(count, "float32")
            finite = ops.logical_and(
                ops.all(ops.isfinite(mean)), ops.all(ops.isfinite(var))
            )
            bad = ops.where(
                ops.logical_and(
                    bad < 0, ops.logical_and(nb > 0, ops.logical_not(finite))
                ),
                ops.cast(batch_index, "int32"),
                bad,
            )
            # The first batch a layer sees fixes its shift; a second call in
            # that batch may have taken another one: re-express its mean.
            new_shift = ops.where(
                ops.logical_and(n <= 0, nb > 0), shift, old_shift
            )
            mean = mean + (shift - new_shift)
            n, mu, m2 = _math.pool_moments((n, mu, m2), mean, var, count)
            new[index] = (n, new_shift, mu, m2, bad)
        if not self._outputs:
            return tuple(new), None
        return tuple(new), (fit_outputs, inference_outputs)

    def measuring_call(self, layer, original):
        index = self._index[id(layer)]
        local, order, mode = self._local, self.order, self._mode
        batch_in_fit = self._batch_in_fit.get(id(layer), True)

        def call(inputs, training=None, mask=None):
            calls = getattr(local, "calls", None)
            if calls is None:  # not measuring: the layer's own call
                return original(inputs, training=training, mask=mask)
            if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
                mask = None  # Keras BN raises here; statistics ignore it.
            dtype = keras.backend.result_type(inputs.dtype, "float32")
            x = ops.cast(inputs, dtype)
            count_so_far, shift = local.state[index][:2]
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
                fused = _compile.fused_normalization(
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
    sum_all = _distribute.cross_replica_sum() if layer.synchronized else None
    if sum_all is None:
        return mean, var
    n = ops.cast(count, mean.dtype) * ops.ones_like(mean)
    total, mean, m2 = _math.all_reduce_moments(n, mean, var * n, sum_all)
    return mean, m2 / ops.maximum(total, 1.0)


