"""TensorFlow: fused BN kernels, `tf.function` steps, `tf.distribute`.

Frozen BN and a fused layer's kernel scaling get their gradients from
`FusedBatchNormGradV2` (one pass over the data instead of autodiff's
several); a statistics pass takes its batch moments from
`FusedBatchNormV3` and runs as a `tf.function` (XLA only where the model
asks, like `predict`). Under a `tf.distribute` strategy each local replica
pools the moments of its share of the batch (what BN sees in `fit`) and the
replicas' and workers' states are all-reduced with sums at the end.
"""

import keras
import numpy as np
import tensorflow as tf

from frozenbn import _math
from frozenbn._backend import generic
from frozenbn._backend.generic import *  # noqa: F401,F403 (the defaults)

# keras/src/backend/tensorflow/numpy.py `add` turns `x + bias` into
# `tf.nn.bias_add(..., "NHWC")` whenever x.shape[-1] equals the bias
# length, even for a (1, C, 1, ...) channels_first bias (Keras 3.15).
BIAS_ADD_ON_LAST_AXIS = True


def records_gradients() -> bool:
    # A traced graph may be differentiated later.
    return True


def frozen_batch_norm(x, gamma, beta, mean, variance, axis, epsilon, layout):
    return generic.frozen_batch_norm(
        x, gamma, beta, mean, variance, axis, epsilon, layout, _fused_backward
    )


def _fused_backward(forward, x, gamma, beta, mean, variance, epsilon, layout):
    @tf.custom_gradient
    def normalize(x, gamma, beta, mean, variance):
        def grad(dy):
            dx, dgamma, dbeta = _gradient(
                dy, x, gamma, mean, variance, epsilon, layout)
            return dx, dgamma, dbeta, None, None

        return forward(x, gamma, beta, mean, variance), grad

    return normalize(x, gamma, beta, mean, variance)


def scale_channels(kernel, scale):
    # The gradient of both from one fused kernel: one pass over `kernel`
    # and its gradient instead of three.
    @tf.custom_gradient
    def scaled(kernel, scale):
        def grad(dy):
            # BN's gradient with mean 0 and rsqrt(variance + epsilon) == 1
            # exactly: dkernel = dy * scale, dscale = sum(dy * kernel).
            half = tf.fill(tf.shape(scale), 0.5)
            dkernel, dscale, _ = _gradient(
                dy, kernel, scale, tf.zeros_like(scale), half, 0.5, "last")
            return dkernel, dscale

        return kernel * scale, grad

    return scaled(kernel, scale)


def _gradient(dy, x, gamma, mean, variance, epsilon, layout):
    """Gradients of inference-mode BN for x, gamma and beta, in one kernel.

    `dx = dy * gamma * rsqrt(variance + epsilon)`,
    `dgamma = sum(dy * (x - mean) * rsqrt(variance + epsilon))` and
    `dbeta = sum(dy)`, summed over every axis but the channel axis.
    """
    shape = tf.shape(x)
    if layout == "first":
        dy = tf.transpose(dy, (0, 2, 3, 1))
        x = tf.transpose(x, (0, 2, 3, 1))
    else:
        channels = x.shape[-1]
        dy = tf.reshape(dy, (-1, 1, 1, channels))
        x = tf.reshape(x, (-1, 1, 1, channels))
    dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV2(
        y_backprop=dy,
        x=x,
        scale=gamma,
        reserve_space_1=mean,
        reserve_space_2=variance,
        epsilon=epsilon,
        data_format="NHWC",
        is_training=False,
    )
    if layout == "first":
        dx = tf.transpose(dx, (0, 3, 1, 2))
    else:
        dx = tf.reshape(dx, shape)
    return dx, dgamma, dbeta


def fused_normalization(x, axis, gamma, beta, epsilon):
    # FusedBatchNormV3 on channels-last float32 viewed as (-1, 1, 1, C).
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


def compile_step(model, body, strategy):
    # One trace for every batch size.
    if strategy is not None:

        def replicated(state, x, index):
            return strategy.run(
                lambda s, xs: body(model, s, xs, index), args=(state, x)
            )

        return tf.function(replicated, reduce_retracing=True)
    return _OpenBatchFunction(
        tf.function(
            lambda state, x, index: body(model, state, x, index),
            jit_compile=bool(getattr(model, "jit_compile", False)),
            reduce_retracing=True,
        )
    )


def eager_step(model, body, strategy, state, x, index):
    if strategy is None:
        return body(model, state, x, index)
    return strategy.run(lambda s, xs: body(model, s, xs, index),
                        args=(state, x))


class _OpenBatchFunction:
    """A `tf.function` traced once with the batch dimension unknown."""

    def __init__(self, function):
        self._function = function
        self._traced = False

    def __call__(self, state, x, index):
        if not self._traced:

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


def placement(model):
    """The `tf.distribute` strategy that owns `model`'s variables, or None."""
    for variable in model.weights:
        # A variable created under a strategy holds a distributed variable.
        strategy = getattr(getattr(variable, "value", None),
                           "distribute_strategy", None)
        if isinstance(strategy, tf.distribute.Strategy):
            if tf.distribute.in_cross_replica_context() or (
                not tf.distribute.has_strategy()
            ):
                return strategy
            raise RuntimeError(
                "frozenbn computes BN statistics in cross-replica context: "
                "call it outside `strategy.run` (from your script or a "
                "callback), not inside a replica function."
            )
    return None


def place_batch(strategy, x):
    """This worker's batch `x`, split over its local replicas."""
    if strategy is None:
        return generic.place_batch(None, x)
    local = len(strategy.extended.worker_devices)
    parts = [
        keras.tree.map_structure(
            lambda a: np.array_split(np.asarray(a), local)[i], x
        )
        for i in range(local)
    ]

    def value(context):
        part = parts[context.replica_id_in_sync_group % local]
        return keras.tree.map_structure(tf.constant, part)

    return strategy.experimental_distribute_values_from_function(value)


def place_state(strategy, state):
    if strategy is None:
        return generic.place_state(None, state)
    return strategy.experimental_distribute_values_from_function(
        lambda context: keras.tree.map_structure(tf.constant, state)
    )


def pool_replicas(strategy, state):
    if strategy is None:
        return generic.pool_replicas(None, state)

    def reduce(replica_state):
        context = tf.distribute.get_replica_context()

        def sum_all(tensors):
            return context.all_reduce("sum", list(tensors))

        # Copies made on the replica's device: collectives refuse a
        # function argument, which has none (MultiWorkerMirroredStrategy).
        count, shift, mean, m2, bad = (tf.identity(t) for t in replica_state)
        # Re-express every replica's mean about one shared shift (the
        # average of the replicas' shifts), so float32 stays exact.
        seen = tf.cast(count > 0, "float32")
        shift_sum, seen_sum = sum_all([shift * seen, seen])
        common = shift_sum / tf.maximum(seen_sum, 1.0)
        mean = tf.where(count > 0, (shift - common) + mean, 0.0)
        count, mean, m2 = _math.all_reduce_moments(count, mean, m2, sum_all)
        anywhere = sum_all([tf.cast(bad >= 0, "float32")])[0]
        return count, common, mean, m2, anywhere

    reduced = tf.function(lambda s: strategy.run(reduce, args=(s,)))(state)
    count, shift, mean, m2, anywhere = (
        np.asarray(strategy.experimental_local_results(t)[0])
        for t in reduced
    )
    # The first bad batch this worker's replicas saw, per channel.
    bad = np.full(count.shape, -1, "int32")
    for local in strategy.experimental_local_results(state[4]):
        local = np.asarray(local)
        bad = np.where((local >= 0) & ((bad < 0) | (local < bad)), local, bad)
    bad = np.where((bad < 0) & (anywhere > 0), generic.REMOTE_BAD, bad)
    return count, shift, mean, m2, bad


def local_outputs(strategy, outputs):
    # The local replicas' parts, joined in the order the batch was split.
    if outputs is None or strategy is None:
        return outputs

    def join(value):
        parts = strategy.experimental_local_results(value)
        return tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]

    return tf.nest.map_structure(join, outputs)


def cross_replica_sum():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return lambda tensors: context.all_reduce("sum", list(tensors))
