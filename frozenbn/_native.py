"""Backend-native gradients for the frozen-BN algebra.

Frozen BN and a fused layer's kernel scaling are per-channel affine maps;
autodiff of `keras.ops` takes several passes over the data for their
gradients, TensorFlow's `FusedBatchNormGradV2` and torch's
`native_batch_norm_backward` one. Forward results stay `keras.ops`
results, bit-exact; only the backward changes, within float32 rounding.
"""

import functools

import keras

NATIVE_BACKENDS = ("tensorflow", "torch")


def records_gradients() -> bool:
    """Whether a native backward may be needed for the next op.

    False on backends without one (JAX) and on torch while autograd is off
    (`torch.no_grad()`, as in Keras's `predict` and `evaluate`). On
    TensorFlow always True: a traced graph may be differentiated later.
    """
    backend = keras.config.backend()
    if backend == "torch":
        import torch  # noqa: PLC0415 (torch backend only)

        return torch.is_grad_enabled()
    return backend in NATIVE_BACKENDS


def frozen_batch_norm(x, gamma, beta, mean, variance, axis, epsilon, layout):
    """Inference-mode BN of float32 `x` with a native fused backward.

    Args:
        x: float32 input; its channel axis is `axis`.
        gamma, beta: per-channel float32 scale and offset, or None (treated
            as ones and zeros; their gradient is then not used).
        mean, variance: per-channel float32 statistics (no gradient).
        axis: the channel axis, as Keras BN's `axis`.
        epsilon: Python float.
        layout: `"last"` (channels last, any rank) or `"first"` (4D,
            channels at axis 1).

    Returns:
        `keras.ops.batch_normalization(x, mean, variance, axis, beta, gamma,
        epsilon)`, bit for bit.
    """
    forward = functools.partial(
        keras.ops.batch_normalization,
        axis=axis,
        epsilon=epsilon,
    )
    has_scale, has_offset = gamma is not None, beta is not None
    if gamma is None:
        gamma = keras.ops.ones_like(mean)
    if beta is None:
        beta = keras.ops.zeros_like(mean)

    def bn(x, gamma, beta, mean, variance):
        return forward(
            x,
            mean,
            variance,
            offset=beta if has_offset else None,
            scale=gamma if has_scale else None,
        )

    if keras.config.backend() == "torch":
        return _torch_function().apply(
            x, gamma, beta, mean, variance, bn, epsilon, layout
        )
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    @tf.custom_gradient
    def normalize(x, gamma, beta, mean, variance):
        def grad(dy):
            dx, dgamma, dbeta = _tf_gradient(
                tf, dy, x, gamma, mean, variance, epsilon, layout
            )
            return dx, dgamma, dbeta, None, None

        return bn(x, gamma, beta, mean, variance), grad

    return normalize(x, gamma, beta, mean, variance)


def scale_channels(kernel, scale):
    """`kernel * scale`, `scale` along the last axis of float32 `kernel`.

    On TensorFlow the gradient of both comes from one fused kernel (one
    pass over `kernel` and its gradient instead of three); elsewhere this
    is the plain product (XLA fuses it; torch's autograd is cheap here).
    """
    if keras.config.backend() != "tensorflow":
        return kernel * scale
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    @tf.custom_gradient
    def scaled(kernel, scale):
        def grad(dy):
            # BN's gradient with mean 0 and rsqrt(variance + epsilon) == 1
            # exactly: dkernel = dy * scale, dscale = sum(dy * kernel).
            half = tf.fill(tf.shape(scale), 0.5)
            dkernel, dscale, _ = _tf_gradient(
                tf, dy, kernel, scale, tf.zeros_like(scale), half, 0.5, "last"
            )
            return dkernel, dscale

        return kernel * scale, grad

    return scaled(kernel, scale)


def _tf_gradient(tf, dy, x, gamma, mean, variance, epsilon, layout):
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


@functools.lru_cache(maxsize=None)
def _torch_function():
    """The `torch.autograd.Function` of a frozen BN (built once, lazily)."""
    import torch  # noqa: PLC0415 (torch backend only)

    class FrozenBatchNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, mean, variance, bn, epsilon, layout):
            ctx.save_for_backward(x, gamma, mean, variance)
            ctx.epsilon, ctx.layout = epsilon, layout
            return bn(x, gamma, beta, mean, variance)

        @staticmethod
        def backward(ctx, dy):
            x, gamma, mean, variance = ctx.saved_tensors
            shape = x.shape
            if ctx.layout == "last":
                # A contiguous (..., C) tensor is a free (N, C) view: the
                # layout torch's batch norm takes, channels at dim 1.
                x = x.reshape(-1, shape[-1])
                dy = dy.reshape(-1, shape[-1])
            # CUDA's kernel asserts that the saved statistics are given
            # even in inference mode (and reads them when they are not
            # empty): pass the moving ones, as the forward used them.
            dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
                dy,
                x,
                gamma,
                mean,
                variance,
                mean,
                torch.rsqrt(variance + ctx.epsilon),
                False,
                ctx.epsilon,
                list(ctx.needs_input_grad[:3]),
            )
            if dx is not None:
                dx = dx.reshape(shape)
            return dx, dgamma, dbeta, None, None, None, None, None

    return FrozenBatchNorm
