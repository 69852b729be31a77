"""`fuse` / `unfuse`: train Conv+frozen BN as one layer, and undo it.

Fusing gives the folded network's cost while gamma and beta still train.
"""

import logging
import math
from typing import Any
from typing import Tuple

import keras
from keras import ops

from frozenbn import _checks
from frozenbn import _graph
from frozenbn import _math
from frozenbn import _pairs
from frozenbn import _walk
from frozenbn._backend import native
from frozenbn.layers import BatchNormalization as _FrozenBN

logger = logging.getLogger(__name__)

_PACKAGE = "frozenbn"


FuseReport = _pairs.RewriteReport
"""Deprecated name of `frozenbn.RewriteReport`, what `fuse` returns."""


def fuse(model: keras.Model) -> Tuple[keras.Model, _pairs.RewriteReport]:
    """Returns a training copy of `model` with frozen BN fused into its layer.

    Each frozen `frozenbn.BatchNormalization` after a linear layer (a pair
    `fold` accepts) becomes one `FusedBatchNorm` computing `conv(x, kernel *
    s) + (bias - mean) * s + beta`, `s = gamma / sqrt(moving_variance +
    epsilon)`: the folded network's cost, while kernel, bias, gamma and beta
    stay separate variables with their names and `trainable` flags. Outputs
    and gradients equal the unfused model's up to float32 rounding. `model`
    is not modified; compile the copy. `unfuse` undoes it.

    Args:
        model: A built Functional or Sequential `keras.Model` with frozen
            `frozenbn.BatchNormalization` layers (`frozenbn.convert(model)`).

    Returns:
        `(fused_model, report)`, the report a `frozenbn.RewriteReport`.

    Example:

    >>> import keras, frozenbn
    >>> model = frozenbn.convert(keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn")], name="model"))
    >>> fused, report = frozenbn.fuse(model)
    >>> [type(layer).__name__ for layer in fused.layers], report.pairs
    (['FusedBatchNorm'], [('model/conv', 'model/bn')])
    >>> [w.name for w in fused.trainable_weights]
    ['kernel', 'bias', 'gamma', 'beta']
    """
    _walk.check_graph_model(model, "fuse")
    rewriter = _pairs.Rewriter("fuse", check=_why_not_fusable, replace=_fused)
    copy = rewriter.rewrite(model)
    report = _pairs.RewriteReport("fuse", rewriter.paired, rewriter.left)
    logger.info("fuse: fused %d BN layer(s), left %d.", len(report.pairs),
                len(report.left))
    return copy, report


def unfuse(model: keras.Model) -> Tuple[keras.Model, _pairs.RewriteReport]:
    """Returns a copy of `model` with each `FusedBatchNorm` split in two.

    The inverse of `fuse`: the linear layer and its BN again, with their
    names and current (trained) values. `model` is not modified.

    Args:
        model: A built Functional or Sequential `keras.Model`.

    Returns:
        `(unfused_model, report)`: the report's `pairs` are the paths of
        the split layers in the copy.

    Raises:
        TypeError: `model` is not a Functional or Sequential model.
        ValueError: `model` is not built.

    Example:

    >>> import keras, frozenbn
    >>> model = frozenbn.convert(keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn")], name="model"))
    >>> unfused, report = frozenbn.unfuse(frozenbn.fuse(model)[0])
    >>> [layer.name for layer in unfused.layers], report.pairs
    (['conv', 'bn'], [('model/conv', 'model/bn')])
    """
    _walk.check_graph_model(model, "unfuse")
    pairs = []

    def start():
        pairs.clear()
        return plan

    def plan(graph, path):
        def replace(operation):
            if not isinstance(operation, FusedBatchNorm):
                return None
            pairs.append((f"{path}/{operation.layer.name}",
                          f"{path}/{operation.batch_norm.name}"))
            return _graph.Chain(_graph.copy_built(operation.layer),
                                _graph.copy_built(operation.batch_norm))

        return replace

    copy, _, rename = _graph.rewrite(model, "unfuse", start)
    report = _pairs.RewriteReport(
        "unfuse", [(rename(a), rename(b)) for a, b in pairs])
    if not report.pairs:
        _checks.warn_unchanged(
            "unfuse", f"model '{model.name}' has no FusedBatchNorm layer",
            "a plain copy")
    return copy, report


def _why_not_fusable(layer, bn):
    if type(bn) is not _FrozenBN:
        return (
            "a Keras BatchNormalization: fuse merges frozen frozenbn layers "
            "only (`frozenbn.convert(model)` first)"
        )
    if not bn.frozen:
        return (
            "frozen=False: in training it normalizes with batch statistics, "
            "which no single layer can compute (freeze it to fuse it)"
        )
    for owner in (layer, bn):
        if getattr(owner, "activity_regularizer", None) is not None:
            return (
                f"'{owner.name}' has an activity regularizer, which needs "
                "the separate layer's output"
            )
    return None


def _fused(layer, bn) -> "FusedBatchNorm":
    return FusedBatchNorm(
        _graph.copy_built(layer),
        _graph.copy_built(bn),
        name=f"{layer.name}_fused",
        dtype=layer.dtype_policy,
    )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FusedBatchNorm(keras.layers.Layer):
    """A linear layer and the frozen BatchNormalization after it, as one.

    Built by `frozenbn.fuse`. It computes `layer_op(x, kernel * s) + (bias -
    moving_mean) * s + beta`, `s = gamma / sqrt(moving_variance + epsilon)`,
    with `layer_op` the layer's convolution or matmul without bias, on the
    sublayers' own variables, so they train as unfused. Where cheaper, or
    with `batch_norm.frozen = False`, it runs the two layers in turn.

    Args:
        layer: The linear layer (one of the types `fuse` accepts).
        batch_norm: A `frozenbn.BatchNormalization` on `layer`'s channel axis.
        **kwargs: Base layer arguments such as `name` and `dtype`.

    Example:

    >>> import keras, frozenbn
    >>> fused = frozenbn.FusedBatchNorm(
    ...     keras.layers.Dense(2), frozenbn.BatchNormalization(frozen=True))
    >>> tuple(fused(keras.ops.ones((1, 3))).shape)
    (1, 2)
    """

    # `_pairs` reports a BN held here as fused, not unreachable.
    merges_batch_norm = True

    def __init__(
        self,
        layer: keras.layers.Layer,
        batch_norm: keras.layers.Layer,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("config_version", None)
        # Read variables in float32 under mixed precision, so `kernel * s`
        # is rounded once; `call` casts the inputs.
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        if not isinstance(layer, _pairs.LINEAR_TYPES):
            raise TypeError(
                "`FusedBatchNorm` fuses a Conv or Dense layer; received "
                f"{type(layer).__name__}. Use `frozenbn.fuse(model)`."
            )
        if not isinstance(batch_norm, _FrozenBN):
            raise TypeError(
                "`FusedBatchNorm` needs a `frozenbn.BatchNormalization`; "
                f"received {type(batch_norm).__name__}."
            )
        self.layer = layer
        self.batch_norm = batch_norm
        self.supports_masking = layer.supports_masking

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        if not self.batch_norm.built:
            self.batch_norm.build(self.layer.compute_output_shape(input_shape))

    # Private switch for tests and benchmarks: "kernel" always scales the
    # kernel; "auto" picks what touches fewer values.
    _mode = "auto"

    def _scales_kernel(self, inputs) -> bool:
        """Whether the kernel has fewer values than the output to scale."""
        if self._mode == "kernel":
            return True
        outputs = self.layer.compute_output_shape(tuple(inputs.shape))
        if any(size is None for size in outputs):
            return True
        if isinstance(self.layer, _pairs.SEPARABLE):
            kernel = self.layer.pointwise_kernel  # the one that is scaled
        else:
            kernel = self.layer.kernel
        return math.prod(kernel.shape) <= math.prod(outputs)

    def call(self, inputs, training=None):
        bn = self.batch_norm
        if not bn.frozen or not self._scales_kernel(inputs):
            return bn(self.layer(inputs), training=training)
        scale, shift = _scale_and_shift(self.layer, bn)
        inputs = ops.cast(inputs, self.compute_dtype)
        outputs = _scaled_op(self.layer, inputs, scale, self.compute_dtype)
        if not _pairs.channel_axis_is_last(self.layer):
            shift = ops.reshape(shift, (1, -1) + (1,) * (len(inputs.shape) - 2))
        return ops.add(outputs, ops.cast(shift, outputs.dtype))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "batch_norm": keras.saving.serialize_keras_object(
                    self.batch_norm
                ),
                "config_version": 1,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("layer", "batch_norm"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        return cls(**config)


def _scale_and_shift(layer, bn):
    """`_math.scale_and_shift` on the float32 variables (differentiable)."""

    def read(variable):
        return None if variable is None else ops.cast(variable, "float32")

    return _math.scale_and_shift(
        read(bn.gamma), read(bn.beta), read(bn.moving_mean),
        read(bn.moving_variance), bn.epsilon,
        read(layer.bias) if layer.use_bias else None, ops.rsqrt,
    )


def _scaled_op(layer, x, scale, dtype):
    """`layer`'s linear op on `x` with its kernel scaled per output channel."""
    kernel, shape = _pairs.scaled_kernel(layer)
    kernel = ops.cast(kernel, "float32")
    if shape == (-1, 1):  # transposed: output channels second last
        kernel = kernel * ops.reshape(scale, shape)
    else:  # output channels last, or (in, multiplier) flattened in order
        full = tuple(kernel.shape)
        flat = ops.reshape(kernel, full[: len(full) - len(shape)] + (-1,))
        kernel = ops.reshape(native.scale_channels(flat, scale), full)
    kernel = ops.cast(kernel, dtype)
    if isinstance(layer, _pairs.SEPARABLE):
        return ops.separable_conv(
            x,
            ops.cast(layer.depthwise_kernel, dtype),
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, _pairs.DEPTHWISE):
        return ops.depthwise_conv(
            x,
            kernel,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, _pairs.TRANSPOSE):
        return ops.conv_transpose(
            x,
            kernel,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, keras.layers.Dense):
        return ops.matmul(x, kernel)
    if layer.padding == "causal":  # Conv1D only
        left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
        time = [left, 0]
        if layer.data_format == "channels_last":
            x = ops.pad(x, [[0, 0], time, [0, 0]])
        else:
            x = ops.pad(x, [[0, 0], [0, 0], time])
        return ops.conv(
            x,
            kernel,
            strides=list(layer.strides),
            padding="valid",
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    return layer.convolution_op(x, kernel)
