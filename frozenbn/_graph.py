"""Copies of Functional and Sequential graphs with some operations replaced.

Each operation is copied from its config, dropped (`Removed`) or replaced
by layers (`Chain`); layers whose config does not rebuild them come from a
private exact copy of the model (`private_copy`).
"""

import contextlib
import logging
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional

import keras

from frozenbn import _clone
from frozenbn import _keras_private
from frozenbn import _walk
from frozenbn.layers import Frozen

logger = logging.getLogger(__name__)


class Removed(keras.layers.Layer):
    """Stands for a dropped operation while a copy is built; never called."""

    def call(self, inputs):  # pragma: no cover - the copy bypasses it
        return inputs


class Chain:
    """Stands for one operation replaced by several layers, called in turn."""

    def __init__(self, *layers: keras.layers.Layer):
        self.layers = list(layers)


def rewrite(model: keras.Model, tool: str, start: Callable):
    """A copy of `model` with some operations replaced.

    `start()` begins an attempt and returns `plan(graph, path)`, called for
    `model` and each graph model nested in it (also inside a
    `frozenbn.Frozen`, which is rewrapped); `plan` returns
    `replace(operation)`: the operation's replacement (a layer, `Removed` or
    `Chain`), or None to copy it from its config. If a config does not
    rebuild its layer, a second attempt rewrites a private exact copy of the
    model (`private_copy`) and reuses such layers from it, with a warning.

    Returns:
        `(copy, source, rename)`: `source` is the model rewritten (`model`
        or its private copy) and `rename(path)` maps a path in it to `model`.
    """

    def attempt(source, reused):
        plan, jobs = start(), []

        def copy(graph, path):
            replace = plan(graph, path)

            def clone(operation):
                if _walk.is_graph_model(operation):
                    return copy(operation, f"{path}/{operation.name}")
                if isinstance(operation, Frozen) and _walk.is_graph_model(
                        operation.layer):
                    inner = operation.layer
                    config = operation.get_config()
                    del config["layer"], config["config_version"]
                    return Frozen(copy(inner, f"{path}/{operation.name}/"
                                              f"{inner.name}"), **config)
                new = replace(operation)
                if new is not None:
                    return new
                try:
                    return copy_layer(operation, jobs)
                except _clone.UncopyableLayer:
                    if reused is None:
                        raise
                    reused.append(operation.name)
                    return operation

            return copy_graph(graph, clone)

        result = copy(source, source.name)
        finish_copies(jobs)
        return result

    try:
        return attempt(model, None), model, lambda path: path
    except _clone.UncopyableLayer as error:
        private, names = private_copy(model, error, tool)
        reused = []
        result = attempt(private, reused)
        warn_reused(tool, reused, names)

        def rename(path):
            return "/".join(names.get(part, part) for part in path.split("/"))

        return result, private, rename


def copy_graph(model: keras.Model, clone: Callable) -> keras.Model:
    """A copy of a Sequential or Functional model, operation by operation.

    `clone(operation)` returns the operation's replacement: a layer, a
    `Removed` (the operation is dropped: its input passes through) or a
    `Chain` (its layers are called one after the other). Nested models are
    whatever `clone` returns for them. Weights are not copied here.
    """
    if isinstance(model, keras.Sequential):
        copy = _copy_sequential(model, clone)
    else:
        copy = keras.models.clone_model(
            model, clone_function=clone, call_function=_call_replacement
        )
    # The container's own flag (its layers' flags come with their configs).
    _keras_private.copy_trainable_flag(model, copy)
    return copy


def _call_replacement(op, *args, **kwargs):
    if isinstance(op, Removed):
        return args[0] if args else kwargs["inputs"]
    if isinstance(op, Chain):
        outputs = op.layers[0](*args, **kwargs)
        for layer in op.layers[1:]:
            outputs = layer(outputs)
        return outputs
    return op(*args, **kwargs)


def _copy_sequential(model, clone) -> keras.Sequential:
    layers = []
    for layer in model.layers:
        new = clone(layer)
        if isinstance(new, Chain):
            layers += new.layers
        elif not isinstance(new, Removed):
            layers.append(new)
    first = _keras_private.sequential_input_layer(model)
    if first is not None:
        inputs = keras.Input(
            batch_shape=first.batch_shape,
            dtype=first.output.dtype,
            name=first.name,
        )
    else:
        spec = model.inputs[0]
        inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype)
    return keras.Sequential([inputs] + layers, name=model.name)


def copy_layer(layer, jobs: list, config: Optional[dict] = None):
    """A fresh copy of a layer or bare operation from its config.

    The copy's weights are set from `layer`'s once it is built: `jobs`
    collects `(layer, copy)` for `finish_copies`. Raises
    `frozenbn._clone.UncopyableLayer` when the config does not rebuild the
    layer.
    """
    new = _clone.copy_layer(layer, config)
    if isinstance(layer, keras.layers.Layer):
        jobs.append((layer, new))
    return new


def finish_copies(jobs: list) -> None:
    """Copies weights and trainable flags into the built copies."""
    for layer, new in jobs:
        _clone.copy_weights(layer, new)


def copy_built(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A built copy of `layer` with its values, trainable flags and paths.

    Built in the name scope that `layer`'s variables were created in (for
    example the enclosing Sequential model's), so that the copy's variables
    have the same paths as well as the same names.
    """
    new = _clone.copy_layer(layer)
    path = layer.weights[0].path.split("/") if layer.weights else []
    with contextlib.ExitStack() as scopes:
        # One scope per part, never merged with an equal parent: a path
        # such as "model/model/conv/kernel" keeps both "model" parts.
        for part in path[:-2]:
            scopes.enter_context(keras.name_scope(part, deduplicate=False))
        new.build_from_config(layer.get_build_config())
    _clone.copy_weights(layer, new)
    return new


def private_copy(model, error: Exception, tool: str):
    """An exact copy of `model` to rewrite, and `{copy's name: model's}`.

    For models with a layer that its config does not rebuild (`error`):
    the copy is made from the model's own config (`frozenbn._clone`), so
    the rewrite can reuse such layers from it and still be independent of
    `model`.
    """
    try:
        private, pairs = _clone.copy_model(model)
    except RuntimeError as copy_error:
        raise RuntimeError(
            f"`frozenbn.{tool}` cannot copy model '{model.name}': {error}, "
            "and the model's own config does not copy it either "
            f"({copy_error}). Make the layer's `get_config` round-trip "
            "through `from_config`."
        ) from copy_error
    names = {
        pairs[id(layer)].name: layer.name
        for layer in _keras_private.iter_layers(model)
        if id(layer) in pairs
    }
    return private, names


def warn_reused(tool: str, reused: List[str], names: Dict[str, str]) -> None:
    """Says which layers a rewrite reused because it could not copy them."""
    if reused:
        logger.warning(
            "%s: reused layer(s) %s as they are (their configs do not "
            "rebuild them); the result works, but a .keras file of it will "
            "not load until their `get_config` is fixed.",
            tool,
            ", ".join(names.get(name, name) for name in reused),
        )


def owners_in_graph(model) -> dict:
    """`{id(layer): graph node that contains it}` for layers inside nodes.

    The nodes of a Functional or Sequential graph (recursively through
    nested graph models) are the layers the model calls; a sublayer of a
    custom node layer is reached only through that layer's own `call`.
    """
    owners = {}
    for op in _keras_private.graph_operations(model):
        if _walk.is_graph_model(op):
            owners.update(owners_in_graph(op))
        elif isinstance(op, keras.layers.Layer):
            for layer in _keras_private.iter_layers(op):
                owners.setdefault(id(layer), op)
    return owners
