"""Every read of Keras's private API, in one module.

Keras 3 keeps a model's layer tree, its graph and the state of the current
call behind private attributes that have no public equivalent. frozenbn reads
them here only, so a Keras release that moves one breaks this file alone
(`tests/test_imports.py` checks that no other module reads them).
"""

import contextlib
from typing import Iterator
from typing import List

import keras
from keras.src.models.functional import Functional


def is_functional(layer) -> bool:
    """Whether `layer` is a Functional model (Keras has no public name for
    the class: `keras.Model(inputs, outputs)` builds one)."""
    return isinstance(layer, Functional)


def iter_layers(root: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields `root` and every layer nested in it, each exactly once.

    The order is breadth first and deterministic for a given structure.
    Bare `keras.Operation` nodes of Functional graphs (`x + 1`, `ops.pad`)
    are not layers and are not yielded.
    """
    # `_flatten_layers` deduplicates shared layers and descends into nested
    # models, wrappers and sublayers of subclassed layers.
    yield from root._flatten_layers(include_self=True, recursive=True)


def children(layer: keras.layers.Layer) -> List[keras.layers.Layer]:
    """The layers directly tracked by `layer` (not their sublayers)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def own_weights(layer: keras.layers.Layer) -> list:
    """The variables `layer` itself created (not its sublayers'), in order."""
    weights, seen = [], set()
    for variable in list(getattr(layer, "_trainable_variables", [])) + list(
        getattr(layer, "_non_trainable_variables", [])
    ):
        if id(variable) not in seen:
            seen.add(id(variable))
            weights.append(variable)
    return weights


def graph_nodes(model) -> list:
    """The operation nodes of a Functional model, inputs to outputs (deepest
    first), input nodes left out."""
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True)
            for node in by_depth[depth] if not node.is_input]


def producer(tensor):
    """The operation that made a symbolic tensor of a graph, or None."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def graph_operations(model) -> list:
    """The operations (layers and bare ops) a Sequential or Functional model
    calls, nested models as one operation each."""
    if isinstance(model, keras.Sequential):
        return model.layers
    return getattr(model, "_operations", [])


def copy_trainable_flag(source, target) -> None:
    """`target`'s own `trainable` flag set to `source`'s, without the public
    setter, which would also overwrite the flags of its sublayers."""
    target._trainable = source._trainable


def sequential_input_layer(model):
    """The `InputLayer` a Sequential model was built with, or None."""
    first = model._layers[0] if model._layers else None
    return first if isinstance(first, keras.layers.InputLayer) else None


@contextlib.contextmanager
def outer_training_kept(layer: keras.layers.Layer) -> Iterator[None]:
    """Restores the `training` of the call around `layer` on exit.

    One call context is shared by a whole outer call, and a sublayer called
    with an explicit `training=False` overwrites its `training`: without
    this, the layers after it would inherit False (Dropout off).
    """
    context = layer._get_call_context()
    outer_training = context.get_value("training")
    try:
        yield
    finally:
        context.set_value("training", outer_training)
