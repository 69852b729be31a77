"""One walk over a model's layers, shared by every frozenbn tool.

`convert`, `freeze`, `recalibrate`, `fold` and `audit` all need "every layer
of this model, nested models and sublayers of custom layers included, each
once". Keras keeps that list behind a private method; this module is the
single place that touches it.
"""

from typing import Callable
from typing import Iterator
from typing import Optional

import keras

LayerPredicate = Optional[Callable[[keras.layers.Layer], bool]]

from frozenbn.layers import KERAS_BATCH_NORMALIZATION  # noqa: F401


def iter_layers(root: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields `root` and every layer nested in it, each exactly once.

    The order is breadth first and deterministic for a given structure, so
    two models built from the same config yield corresponding layers in the
    same positions.
    """
    # `_flatten_layers` deduplicates shared layers and descends into nested
    # models, wrappers and sublayers of subclassed layers.
    yield from root._flatten_layers(include_self=True, recursive=True)


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a Keras `BatchNormalization` (or a subclass)."""
    return isinstance(layer, KERAS_BATCH_NORMALIZATION)


def batch_norm_layers(
    root: keras.layers.Layer, include: LayerPredicate = None
) -> list:
    """Every BatchNormalization layer in `root` that `include` selects."""
    return [
        layer
        for layer in iter_layers(root)
        if is_batch_norm(layer) and (include is None or include(layer))
    ]
