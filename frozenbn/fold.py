"""`fold`: an inference copy with BatchNormalization folded into Conv/Dense."""

import dataclasses
import logging
from typing import Dict
from typing import List
from typing import Tuple

import keras
import numpy as np

from frozenbn import _clone
from frozenbn import _math
from frozenbn import _pairs

logger = logging.getLogger(__name__)

FOLDABLE_TYPES = _pairs.LINEAR_TYPES


@dataclasses.dataclass
class FoldReport:
    """What `fold` folded and what it left, by layer name.

    Attributes:
        folded: `(layer_name, bn_name)` pairs: the BN layer `bn_name` was
            folded into `layer_name` and removed.
        left: `(bn_name, reason)` pairs for BN layers kept in the copy.
    """

    folded: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    left: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        return _pairs.report_text("Folded", self.folded, self.left)


def fold(model: keras.Model) -> Tuple[keras.Model, FoldReport]:
    """Returns an inference copy of `model` with BN folded into its producer.

    In inference mode a BatchNormalization layer is the per-channel affine
    map `x * scale + bias` with `scale = gamma / sqrt(moving_variance +
    epsilon)` and `bias = beta - moving_mean * scale`. When it directly
    follows a linear layer, that map can be merged into the layer's kernel
    and bias, removing one pass over the activations. `fold` does this for
    every BN layer that

    - directly follows a `Conv1D`/`Conv2D`/`Conv3D`, `Conv1DTranspose`/
      `Conv2DTranspose`/`Conv3DTranspose`, `DepthwiseConv1D`/
      `DepthwiseConv2D`, `SeparableConv1D`/`SeparableConv2D` (folded into
      the pointwise kernel) or `Dense` layer (stock Keras classes, not
      quantized, no LoRA),
    - is that layer's output's only consumer (not shared with another
      branch or a model output), neither layer being called more than once,
    - with a linear activation in that layer (nothing in between),
    - and normalizes that layer's channel axis (`channels_first` handled).

    The layer is rebuilt with `use_bias=True` and the folded weights, and
    the BN disappears from the copy. Everything else is copied unchanged,
    including BN layers that cannot be folded; `FoldReport` says which were
    folded and why the others were left. The folding arithmetic is done in
    float64 (`frozenbn._math.fold_scale_bias`) and cast once to the
    layer's variable dtype. Works on Functional and Sequential models and
    recursively on the Functional and Sequential models nested in them.
    frozenbn's `BatchNormalization` folds like Keras's (whatever `frozen`
    says, inference uses the moving statistics).

    The copy computes what `model(x, training=False)` computes, up to
    float32 rounding (about 1e-6 relative). It is meant for inference and
    export only: the folded layers no longer have BN's training behaviour,
    so do not train it. `model` is not modified.

    Args:
        model: A built Functional or Sequential `keras.Model`.

    Returns:
        `(folded_model, report)`.

    Raises:
        TypeError: `model` is not a Functional or Sequential model (a
            subclassed model's structure lives in its Python code; rebuild
            it as a Functional model to fold it).
        ValueError: `model` is not built.

    Example:

    >>> import keras, frozenbn
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()])
    >>> folded, report = frozenbn.fold(model)
    >>> " -> ".join(type(layer).__name__ for layer in folded.layers)
    'Conv2D -> ReLU'
    >>> report.folded
    [('conv', 'bn')]
    """
    _pairs.check_graph_model(model, "fold")
    # Keras's and frozenbn's BN fold alike (inference uses the moving
    # statistics whatever `frozen` says): no check beyond the pair's.
    rewriter = _pairs.Rewriter(
        "fold", check=None, replace=_with_bias, finish=_set_folded
    )
    copy = rewriter.rewrite(model)
    report = FoldReport(folded=rewriter.paired, left=rewriter.left)
    logger.info(
        "fold: folded %d BN layer(s), left %d.",
        len(report.folded),
        len(report.left),
    )
    return copy, report


def _with_bias(layer, bn) -> keras.layers.Layer:
    config = layer.get_config()
    config["use_bias"] = True
    return _clone.copy_layer(layer, config)


def _set_folded(layer, bn, new) -> None:
    _assign(new, _folded_weights(layer, bn))


def _folded_weights(layer, bn) -> Dict[str, np.ndarray]:
    """The folded variables of `layer` (followed by `bn`), by name, float64."""

    def value(variable):
        return (
            None if variable is None else keras.ops.convert_to_numpy(variable)
        )

    scale, shift = _math.fold_scale_bias(
        value(bn.gamma),
        value(bn.beta),
        value(bn.moving_mean),
        value(bn.moving_variance),
        bn.epsilon,
    )
    bias = value(layer.bias) if layer.use_bias else np.zeros(scale.shape)
    folded = {"bias": bias.astype(np.float64) * scale + shift}
    if isinstance(layer, _pairs.SEPARABLE):
        folded["depthwise_kernel"] = value(layer.depthwise_kernel)
        folded["pointwise_kernel"] = value(layer.pointwise_kernel) * scale
    elif isinstance(layer, _pairs.DEPTHWISE):
        kernel = value(layer.kernel)
        folded["kernel"] = kernel * scale.reshape(kernel.shape[-2:])
    elif isinstance(layer, _pairs.TRANSPOSE):
        folded["kernel"] = value(layer.kernel) * scale[:, None]
    else:
        folded["kernel"] = value(layer.kernel) * scale
    return folded


def _assign(layer, values: Dict[str, np.ndarray]) -> None:
    variables = {v.name: v for v in layer.weights}
    if set(variables) != set(values):
        raise RuntimeError(
            f"Unexpected variables {sorted(variables)} in the copy of "
            f"'{layer.name}' (expected {sorted(values)}); please report this."
        )
    for name, variable in variables.items():
        variable.assign(np.asarray(values[name]).astype(variable.dtype))
