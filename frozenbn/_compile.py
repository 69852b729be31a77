"""Runs one step of a statistics pass compiled, the fastest honest way.

`frozenbn._stats` writes a step as `body(run_model, state, x, batch_index)`
in `keras.ops`; `Step` runs it as a `tf.function` (XLA only where the model
asks, like `predict`; one trace for every batch size), a `jax.jit` of
`stateless_call`, or eagerly under `torch.no_grad()` (`torch.compile` takes
minutes on a CPU). The state stays on the device until `finish`. A step
that fails to compile runs eagerly, with a warning giving the reason.
"""

import contextlib
import logging

import keras
import numpy as np

from frozenbn import _checks
from frozenbn import _distribute

logger = logging.getLogger("frozenbn")


class Step:
    """`body(run_model, state, x, batch_index) -> (state, outputs)` compiled
    for `model`, batches placed on its replicas (`_distribute.placement`)."""

    def __init__(self, model, body):
        self._model = model
        self._body = body
        self._backend = keras.config.backend()
        self._where = _distribute.placement(model)
        tensorflow = self._backend == "tensorflow"
        self._strategy = self._where if tensorflow else None
        self._pending = None
        self._eager = False
        self._compiled = self._compile()
        eagerly = bool(getattr(model, "run_eagerly", False))
        if eagerly or self._compiled is None:
            self._eager = True

    @property
    def eager(self) -> bool:
        """Whether the step runs eagerly (op by op)."""
        return self._eager

    def init_state(self, state):
        """Places a host state (NumPy arrays) where the steps keep it."""
        return _distribute.place_state(self._where, state)

    def build(self, x) -> None:
        """Builds the model by calling it once, eagerly, in inference mode."""
        with _no_grad():
            self._model(_distribute.place_batch(None, x))

    def __call__(self, state, x, batch_index: int):
        x = _distribute.place_batch(self._where, x)
        index = np.int32(batch_index)
        with _no_grad():
            if not self._eager:
                try:
                    result = self._compiled(state, x, index)
                except Exception as compiled_error:  # noqa: BLE001
                    result = self._eager_call(state, x, index)
                    logger.warning(
                        "The statistics pass of model '%s' runs eagerly (op "
                        "by op, slower) because its compiled step failed: "
                        "%s",
                        self._model.name,
                        f"{type(compiled_error).__name__}: "
                        f"{_checks.one_line(compiled_error)}",
                    )
                    self._eager = True
            else:
                result = self._eager_call(state, x, index)
        self._bound_dispatch(result[0])
        return result[0], _distribute.local_outputs(self._where, result[1])

    def finish(self, state):
        """The state pooled over all replicas and workers, as NumPy arrays."""
        self._pending = None
        return _distribute.pool_replicas(self._where, state)

    # -- compiling ---------------------------------------------------------

    def _compile(self):
        model, body = self._model, self._body
        if self._backend == "tensorflow":
            import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

            jit = bool(getattr(model, "jit_compile", False))
            if self._strategy is not None:
                strategy = self._strategy

                def replicated(state, x, index):
                    return strategy.run(
                        lambda s, xs: body(model, s, xs, index), args=(state, x)
                    )

                return tf.function(replicated, reduce_retracing=True)
            return _OpenBatchFunction(
                tf.function(
                    lambda state, x, index: body(model, state, x, index),
                    jit_compile=jit,
                    reduce_retracing=True,
                )
            )
        if self._backend == "jax":
            import jax  # noqa: PLC0415 (JAX backend only)

            if not getattr(model, "jit_compile", True):
                return None
            jitted = jax.jit(self._stateless)
            return lambda state, x, index: jitted(
                *_variable_values(model), state, x, index
            )
        return None  # torch and numpy: eager is the fast path

    def _stateless(self, trainable, non_trainable, state, x, index):
        def run_model(inputs, **kwargs):
            return self._model.stateless_call(
                trainable, non_trainable, inputs, **kwargs
            )[0]

        return self._body(run_model, state, x, index)

    def _eager_call(self, state, x, index):
        model, body = self._model, self._body
        if self._backend == "jax":
            return self._stateless(*_variable_values(model), state, x, index)
        if self._strategy is not None:
            return self._strategy.run(
                lambda s, xs: body(model, s, xs, index), args=(state, x)
            )
        return body(model, state, x, index)

    def _bound_dispatch(self, state) -> None:
        # JAX returns before the step has run; wait for the step before
        # this one, so at most two steps are in flight.
        if self._backend != "jax":
            return
        if self._pending is not None:
            import jax  # noqa: PLC0415 (JAX backend only)

            jax.block_until_ready(self._pending)
        self._pending = state

class _OpenBatchFunction:
    """A `tf.function` traced once with the batch dimension unknown."""

    def __init__(self, function):
        self._function = function
        self._traced = False

    def __call__(self, state, x, index):
        if not self._traced:
            import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

            def spec(t, open_batch):
                shape = list(t.shape)
                if open_batch and shape:
                    shape[0] = None
                return tf.TensorSpec(shape, t.dtype)

            self._function.get_concrete_function(
                keras.tree.map_structure(lambda t: spec(t, False), state),
                keras.tree.map_structure(lambda t: spec(t, True), x),
                tf.TensorSpec((), tf.int32),
            )
            self._traced = True
        return self._function(state, x, index)


def fused_normalization(x, axis, gamma, beta, epsilon):
    """`(outputs, mean, biased_variance, count)` from the backend's fused
    training-mode BN kernel, which reads the activations once; None where
    the `keras.ops` path is needed (JAX, where XLA fuses it; other layouts
    or dtypes; fewer than two positions). torch's running buffers with
    `momentum=1` hold the batch statistics (as fvcore reads them); TF runs
    `FusedBatchNormV3` on channels-last float32 viewed as `(-1, 1, 1, C)`.
    """
    backend = keras.config.backend()
    if backend == "torch":
        return _torch_fused_normalization(x, axis, gamma, beta, epsilon)
    if backend == "tensorflow":
        return _tf_fused_normalization(x, axis, gamma, beta, epsilon)
    return None


def _torch_fused_normalization(x, axis, gamma, beta, epsilon):
    import torch  # noqa: PLC0415 (torch backend only)

    moved = torch.movedim(x, axis, 1)
    channels = moved.shape[1]
    count = moved.numel() // max(channels, 1)
    if count < 2:
        return None
    mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
    var = torch.ones(channels, dtype=x.dtype, device=x.device)
    outputs = torch.nn.functional.batch_norm(
        moved, mean, var, weight=gamma, bias=beta, training=True,
        momentum=1.0, eps=epsilon,
    )
    var = var * ((count - 1) / count)
    return torch.movedim(outputs, 1, axis), mean, var, count


def _tf_fused_normalization(x, axis, gamma, beta, epsilon):
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    rank = len(x.shape)
    channels = x.shape[-1]
    if (
        x.dtype != tf.float32
        or axis % rank != rank - 1
        or channels is None
        or epsilon < 1.001e-5  # the kernel's documented minimum
    ):
        return None
    flat = tf.reshape(x, (-1, 1, 1, channels))
    count = tf.cast(tf.shape(flat)[0], tf.float32)
    outputs, mean, var = tf.raw_ops.FusedBatchNormV3(
        x=flat,
        scale=tf.ones(channels) if gamma is None else gamma,
        offset=tf.zeros(channels) if beta is None else beta,
        mean=tf.zeros(0),
        variance=tf.zeros(0),
        epsilon=epsilon,
        is_training=True,
        exponential_avg_factor=1.0,
    )[:3]
    var = tf.where(count > 1, var * ((count - 1) / tf.maximum(count, 1)), 0.0)
    return tf.reshape(outputs, tf.shape(x)), mean, var, count


def _variable_values(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def _no_grad():
    if keras.config.backend() == "torch":
        import torch  # noqa: PLC0415 (torch backend only)

        return torch.no_grad()
    return contextlib.nullcontext()
