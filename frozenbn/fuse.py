"""`fuse` / `unfuse`: train Conv+frozen BN as one layer, and undo it."""

import logging
import math
from typing import Any
from typing import Tuple

import keras
from keras import ops

from frozenbn import _checks
from frozenbn import _clone
from frozenbn import _graph
from frozenbn import _math
from frozenbn import _native
from frozenbn import _pairs
from frozenbn import _walk
from frozenbn.layers import BatchNormalization as _FrozenBN

logger = logging.getLogger(__name__)

_PACKAGE = "frozenbn"


FuseReport = _pairs.RewriteReport
"""Deprecated name of `frozenbn.RewriteReport`, what `fuse` returns."""


def fuse(model: keras.Model) -> Tuple[keras.Model, _pairs.RewriteReport]:
    """Returns a training copy of `model` with frozen BN fused into its layer.

    A frozen `frozenbn.BatchNormalization` after a linear layer is computed
    inside it, `conv(x, kernel * s) + (bias - mean) * s + beta` with `s =
    gamma / sqrt(moving_variance + epsilon)` (PyTorch Inductor's
    "efficient_conv_bn_eval"): the cost of the folded network, while the
    kernel, bias, gamma and beta stay separate variables with their names
    and `trainable` flags, trained as before. Pairs qualify by `fold`'s
    rules, with the BN frozen. Outputs and gradients equal the unfused
    model's up to float32 rounding. The copy saves as `.keras`; `unfuse`
    gives back separate layers. `model` is not modified; compile the copy.

    Args:
        model: A built Functional or Sequential `keras.Model` with frozen
            `frozenbn.BatchNormalization` layers (`frozenbn.convert(model)`).

    Returns:
        `(fused_model, report)`: the report is a `frozenbn.RewriteReport`.

    Example:

    >>> import keras, frozenbn
    >>> model = frozenbn.convert(keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()],
    ...     name="model"))
    >>> fused, report = frozenbn.fuse(model)
    >>> [type(layer).__name__ for layer in fused.layers], report.pairs
    (['FusedBatchNorm', 'ReLU'], [('model/conv', 'model/bn')])
    >>> [w.name for w in fused.trainable_weights]
    ['kernel', 'bias', 'gamma', 'beta']
    """
    _pairs.check_graph_model(model, "fuse")
    rewriter = _pairs.Rewriter("fuse", check=_why_not_fusable, replace=_fused)
    copy = rewriter.rewrite(model)
    report = _pairs.RewriteReport("fuse", rewriter.paired, rewriter.left)
    logger.info("fuse: fused %d BN layer(s), left %d.", len(report.pairs),
                len(report.left))
    return copy, report


def unfuse(model: keras.Model) -> Tuple[keras.Model, _pairs.RewriteReport]:
    """Returns a copy of `model` with each `FusedBatchNorm` split in two.

    The inverse of `fuse`: every fused layer becomes its linear layer
    followed by its BN layer again, with the current (trained) values of all
    their variables and their names. Everything else is copied unchanged.
    `model` is not modified.

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
    >>> fused, _ = frozenbn.fuse(model)
    >>> unfused, report = frozenbn.unfuse(fused)
    >>> [layer.name for layer in unfused.layers], report.pairs
    (['conv', 'bn'], [('model/conv', 'model/bn')])
    """
    _pairs.check_graph_model(model, "unfuse")
    report = _pairs.RewriteReport("unfuse")
    try:
        copy = _unfuse(model, None, model.name, report.pairs)
    except _clone.UncopyableLayer as error:
        # See `_graph.private_copy`: reuse the layers that a config does
        # not rebuild, from a private copy of the model.
        private, names = _graph.private_copy(model, error, "unfuse")
        reused, report.pairs[:] = [], []
        copy = _unfuse(private, reused, model.name, report.pairs)
        _graph.warn_reused("unfuse", reused, names)
    if not report.pairs:
        _checks.warn_unchanged(
            "unfuse", f"model '{model.name}' has no FusedBatchNorm layer",
            "a plain copy")
    return copy, report


def _unfuse(model: keras.Model, reused, path, pairs) -> keras.Model:
    jobs = []

    def clone(operation):
        if _walk.is_graph_model(operation):
            return _unfuse(operation, reused, f"{path}/{operation.name}",
                           pairs)
        if isinstance(operation, FusedBatchNorm):
            pairs.append((f"{path}/{operation.layer.name}",
                          f"{path}/{operation.batch_norm.name}"))
            return _graph.Chain(
                _graph.copy_built(operation.layer),
                _graph.copy_built(operation.batch_norm),
            )
        try:
            return _graph.copy_layer(operation, jobs)
        except _clone.UncopyableLayer:
            if reused is None:
                raise
            reused.append(operation.name)
            return operation

    copy = _graph.copy_graph(model, clone)
    _graph.finish_copies(jobs)
    return copy


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

    Built by `frozenbn.fuse`. With `s = gamma / sqrt(moving_variance +
    epsilon)` (gamma = 1 for `scale=False`, beta = 0 for `center=False`,
    bias = 0 for `use_bias=False`), it computes

        layer_op(x, kernel * s) + (bias - moving_mean) * s + beta

    where `layer_op` is `layer`'s convolution or matrix product without its
    bias. For a separable convolution the pointwise kernel is scaled, for a
    depthwise one the kernel's `(in, multiplier)` axes, for a transposed one
    its output axis. The variables are those of the two sublayers, so
    `layer.kernel`, `layer.bias`, `batch_norm.gamma` and `batch_norm.beta`
    train as they would unfused, and gradients are equal up to float32
    rounding. If `batch_norm.frozen` is set to False, the two sublayers run
    one after the other, exactly as unfused.

    Args:
        layer: The linear layer (one of the types `fuse` accepts), built.
        batch_norm: A `frozenbn.BatchNormalization` on `layer`'s channel
            axis, built on `layer`'s output.
        **kwargs: Base layer arguments such as `name` and `dtype`.
    """

    # `_pairs` reports a BN held here as fused rather than as unreachable.
    merges_batch_norm = True

    def __init__(
        self,
        layer: keras.layers.Layer,
        batch_norm: keras.layers.Layer,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("config_version", None)
        # Variables are read at their own dtype (float32 under mixed
        # precision) so that `kernel * s` is computed before it is rounded;
        # `call` casts the inputs itself.
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

    # Private switch for tests and benchmarks: "auto" scales the kernel or
    # runs the two layers in turn, whichever touches fewer values; "kernel"
    # always scales the kernel.
    _mode = "auto"

    def _scales_kernel(self, inputs) -> bool:
        """Whether scaling the kernel is cheaper than scaling the output.

        Scaling the kernel costs a few passes over the kernel (forward and
        backward); normalizing the output costs as many over the output.
        """
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
    """`_math.scale_and_shift` in float32 from the variables, so gradients
    reach bias, gamma and beta."""

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
        kernel = ops.reshape(_native.scale_channels(flat, scale), full)
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
