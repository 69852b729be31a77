"""`fold`: an inference copy with BatchNormalization folded into Conv/Dense."""

import logging
from typing import Dict
from typing import Tuple

import keras
import numpy as np

from frozenbn import _clone
from frozenbn import _math
from frozenbn import _pairs
from frozenbn import _walk

logger = logging.getLogger(__name__)

FOLDABLE_TYPES = _pairs.LINEAR_TYPES


FoldReport = _pairs.RewriteReport
"""Deprecated name of `frozenbn.RewriteReport`, what `fold` returns."""


def fold(model: keras.Model) -> Tuple[keras.Model, _pairs.RewriteReport]:
    """Returns an inference copy of `model` with BN folded into its producer.

    In inference mode a BN layer is a per-channel affine map; after a
    linear layer it merges into that layer's kernel and bias
    (`frozenbn._math.scale_and_shift`, in float64, rounded once). `fold`
    does this for every BN whose input is the only use of a stock Conv,
    transposed, depthwise, separable or Dense layer's output, with a linear
    activation and the same channel axis, in nested Functional and
    Sequential models too. The copy computes what `model(x,
    training=False)` computes up to float32 rounding; it is for inference
    and export, not training. `model` is not modified. docs/usage.md lists
    the rules; the report says why each other BN was left.

    Args:
        model: A built Functional or Sequential `keras.Model`.

    Returns:
        `(folded_model, report)`: the report is a `frozenbn.RewriteReport`.

    Example:

    >>> import keras, frozenbn
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()],
    ...     name="model")
    >>> folded, report = frozenbn.fold(model)
    >>> " -> ".join(type(layer).__name__ for layer in folded.layers)
    'Conv2D -> ReLU'
    >>> report.pairs
    [('model/conv', 'model/bn')]
    """
    _walk.check_graph_model(model, "fold")
    # Keras's and frozenbn's BN fold alike (inference uses the moving
    # statistics whatever `frozen` says): no check beyond the pair's.
    rewriter = _pairs.Rewriter(
        "fold", check=None, replace=_with_bias, finish=_set_folded
    )
    copy = rewriter.rewrite(model)
    report = _pairs.RewriteReport("fold", rewriter.paired, rewriter.left)
    logger.info("fold: folded %d BN layer(s), left %d.", len(report.pairs),
                len(report.left))
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
        if variable is None:
            return None
        return keras.ops.convert_to_numpy(variable).astype(np.float64)

    scale, shift = _math.scale_and_shift(
        value(bn.gamma), value(bn.beta), value(bn.moving_mean),
        value(bn.moving_variance), float(bn.epsilon),
        value(layer.bias) if layer.use_bias else None,
        lambda v: 1.0 / np.sqrt(v),
    )
    kernel, shape = _pairs.scaled_kernel(layer)
    folded = {"bias": shift, kernel.name: value(kernel) * scale.reshape(shape)}
    if isinstance(layer, _pairs.SEPARABLE):
        folded["depthwise_kernel"] = value(layer.depthwise_kernel)
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
