"""One walk over a model's layers, shared by every frozenbn tool.

Every layer once, nested models and sublayers of custom layers included,
and which layer of a copy stands for which of the original. Keras keeps the
layer tree behind private attributes; `_keras_private` reads them.
"""

from collections import deque
from typing import Callable
from typing import Dict
from typing import Optional

import keras

from frozenbn import _checks
from frozenbn import _keras_private
from frozenbn.layers import KERAS_BATCH_NORMALIZATION
from frozenbn.layers import BatchNormalization as _FrozenBatchNormalization

LayerPredicate = Optional[Callable[[keras.layers.Layer], bool]]


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    """Whether `layer` is a Keras `BatchNormalization` (or a subclass)."""
    return isinstance(layer, KERAS_BATCH_NORMALIZATION)


def batch_norm_layers(
    root: keras.layers.Layer, include: LayerPredicate = None
) -> list:
    """Every BatchNormalization layer in `root` that `include` selects."""
    return Tree(root).batch_norm_layers(include)


class Tree:
    """A model's layers from one walk, shared by the steps of one tool.

    `convert` checks, copies and swaps from one `Tree`, so the model is
    walked once (`match` then pairs it with its copy). `layers` holds every
    layer, breadth first; paths are computed only when a message needs one.
    """

    def __init__(self, root: keras.layers.Layer):
        self.root = root
        self.layers = list(_keras_private.iter_layers(root))
        self._paths = None

    def batch_norm_layers(self, include: LayerPredicate = None) -> list:
        """The BN layers that `include` selects, in walk order."""
        return [
            layer
            for layer in self.layers
            if is_batch_norm(layer) and (include is None or include(layer))
        ]

    def path(self, layer: keras.layers.Layer) -> str:
        """The path of `layer` in `root` (see `paths`), or its name."""
        if self._paths is None:
            self._paths = paths(self.root)
        return self._paths.get(id(layer), layer.name)


def custom_batch_norm_reason(layer: keras.layers.Layer) -> Optional[str]:
    """Why every tool leaves a custom BN subclass alone; None for other layers.

    frozenbn knows the `call` of Keras's and its own BN classes only; a
    subclass may compute something else. `convert` refuses it (`include` can
    skip it); the other tools leave it and say so with this reason.
    """
    if not is_batch_norm(layer) or type(layer) in (
        KERAS_BATCH_NORMALIZATION,
        _FrozenBatchNormalization,
    ):
        return None
    cls = type(layer)
    return (
        f"a custom BatchNormalization subclass ({cls.__module__}."
        f"{cls.__qualname__}), whose own `call` frozenbn does not "
        "reinterpret"
    )


def is_graph_model(layer) -> bool:
    """Whether `layer` is a Sequential or Functional model (a known graph).

    `keras.Model(inputs, outputs)` and subclasses that call it (keras-hub
    backbones and task models) are Functional; subclassed models whose
    structure lives in their `call` are not.
    """
    return (isinstance(layer, keras.Sequential)
            or _keras_private.is_functional(layer))


def check_graph_model(model, function_name: str,
                      remedy: Optional[str] = None) -> None:
    """Raises unless `model` is a built Functional or Sequential model; the
    `TypeError` ends with `remedy` (default: rebuild it as Functional)."""
    _checks.check_is_layer(model, function_name)
    if not is_graph_model(model):
        remedy = remedy or (
            "Rebuild it as a Functional model (`keras.Model(inputs, "
            f"outputs)`) to {function_name} it.")
        raise TypeError(
            f"`frozenbn.{function_name}` needs a Functional or Sequential "
            f"model, whose layer graph it can read. '{model.name}' is a "
            f"{type(model).__name__} (a subclassed model or a bare layer), "
            f"whose structure lives in its Python code. {remedy}"
        )
    check_built(model, function_name)


def check_built(model: keras.layers.Layer, function_name: str) -> None:
    """Raises a `ValueError` naming `function_name` unless `model` is built.

    Only the model itself must be built. Sublayers that were never called
    (keras-hub models keep some) have no weights to copy, and a copy made
    from the config has them unbuilt too.
    """
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights yet "
            f"and `frozenbn.{function_name}` has nothing to work on. Build "
            "it first: give it an `Input`, call it on a batch, or call "
            "`model.build(input_shape)`."
        )


def paths(root: keras.layers.Layer) -> Dict[int, str]:
    """`id(layer) -> "root/child/grandchild"` for every layer in `root`.

    A layer reachable along several paths (a shared layer) gets the first
    one in breadth-first order.
    """
    found = {id(root): root.name}
    queue = deque([root])
    while queue:
        parent = queue.popleft()
        for child in _keras_private.children(parent):
            if id(child) not in found:
                found[id(child)] = f"{found[id(parent)]}/{child.name}"
                queue.append(child)
    return found


def match(
    source: keras.layers.Layer, copy: keras.layers.Layer
) -> Dict[int, keras.layers.Layer]:
    """`{id(source_layer): copy_layer}`: each layer's counterpart in `copy`.

    Matched level by level by path: children with the same name and class
    first (a model rebuilt from config may reorder sublayers), the rest by
    class in order (unnamed sublayers get new automatic names in a copy).
    Shared layers are matched once; layers with no counterpart are absent.
    """
    pairs = {id(source): copy}
    queue = deque([(source, copy)])
    while queue:
        src, dst = queue.popleft()
        for a, b in _pair_children(_keras_private.children(src),
                                    _keras_private.children(dst)):
            if id(a) not in pairs:
                pairs[id(a)] = b
                queue.append((a, b))
    return pairs


def same_kind(a, b) -> bool:
    """Whether `a` and `b` may stand for each other in a copy.

    Same class, or one Keras and one frozenbn BatchNormalization: layers
    that a custom layer builds in its code come back as Keras's class when
    the layer is rebuilt from its config, whatever they were converted to.
    """
    if type(a) is type(b):
        return True
    plain = (KERAS_BATCH_NORMALIZATION, _FrozenBatchNormalization)
    return type(a) in plain and type(b) in plain


def _kind(layer):
    if type(layer) is _FrozenBatchNormalization:
        return KERAS_BATCH_NORMALIZATION
    return type(layer)


def _pair_children(sources: list, copies: list) -> list:
    def unique_names(layers):
        counts = {}
        for layer in layers:
            counts[layer.name] = counts.get(layer.name, 0) + 1
        return {layer.name: layer for layer in layers if counts[layer.name] == 1}

    by_name = unique_names(copies)
    source_names = unique_names(sources)
    pairs, taken = [], set()
    for layer in sources:
        other = by_name.get(layer.name)
        if (
            source_names.get(layer.name) is layer
            and other is not None
            and same_kind(other, layer)
        ):
            pairs.append((layer, other))
            taken.add(id(layer))
            taken.add(id(other))
    remaining = {}
    for other in copies:
        if id(other) not in taken:
            remaining.setdefault(_kind(other), deque()).append(other)
    for layer in sources:
        if id(layer) in taken:
            continue
        candidates = remaining.get(_kind(layer))
        if candidates:
            pairs.append((layer, candidates.popleft()))
    return pairs
