"""Copies of Sequential and Functional models, operation by operation.

The graph surgery shared by `fold`, `fuse` and `unfuse`: a copy in which
any operation may be replaced by another layer, dropped (`Removed`) or
expanded into several layers called in turn (`Chain`), nested models
included; fresh copies of layers with their values, trainable flags and
variable paths; and the one check of which models can be copied.
"""

from typing import Callable

import keras

from frozenbn import _checks
from frozenbn import _walk


def check_graph_model(model, function_name: str) -> None:
    """Raises unless `model` is a built Functional or Sequential model."""
    _checks.check_is_layer(model, function_name)
    if not is_graph_model(model):
        raise TypeError(
            f"`frozenbn.{function_name}` needs a Functional or Sequential "
            f"model, whose layer graph it can read. '{model.name}' is a "
            f"{type(model).__name__} (a subclassed model or a bare layer), "
            "whose structure lives in its Python code. Rebuild it as a "
            f"Functional model (`keras.Model(inputs, outputs)`) to "
            f"{function_name} it."
        )
    if not model.built or not all(
        layer.built for layer in _walk.iter_layers(model)
    ):
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights to "
            f"{function_name} yet. Give it an `Input` or call it on a batch "
            "first."
        )


def is_graph_model(layer) -> bool:
    """Whether `layer` is a Sequential or Functional model."""
    if isinstance(layer, keras.Sequential):
        return True
    # `keras.Model(inputs, outputs)` (and subclasses that call it) are
    # Functional: they keep their graph of nodes.
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth")


class Removed(keras.layers.Layer):
    """Stands for a dropped operation while a copy is built; never called."""

    def call(self, inputs):  # pragma: no cover - the copy bypasses it
        return inputs


class Chain:
    """Stands for one operation replaced by several layers, called in turn."""

    def __init__(self, *layers: keras.layers.Layer):
        self.layers = list(layers)


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
    copy._trainable = model._trainable
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
    first = model._layers[0] if model._layers else None
    if isinstance(first, keras.layers.InputLayer):
        inputs = keras.Input(
            batch_shape=first.batch_shape,
            dtype=first.output.dtype,
            name=first.name,
        )
    else:
        spec = model.inputs[0]
        inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype)
    return keras.Sequential([inputs] + layers, name=model.name)


def copy_layer(layer, jobs: list):
    """A fresh copy of a layer or bare operation from its config.

    The copy's weights are set from `layer`'s once it is built: `jobs`
    collects `(layer, copy)` for `finish_copies`.
    """
    new = layer.__class__.from_config(layer.get_config())
    if isinstance(layer, keras.layers.Layer):
        jobs.append((layer, new))
    return new


def finish_copies(jobs: list) -> None:
    """Copies weights and trainable flags into the built copies."""
    for layer, new in jobs:
        _copy_values(layer, new)


def copy_built(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A built copy of `layer` with its values, trainable flags and paths.

    Built in the name scope that `layer`'s variables were created in (for
    example the enclosing Sequential model's), so that the copy's variables
    have the same paths as well as the same names.
    """
    new = layer.__class__.from_config(layer.get_config())
    path = layer.weights[0].path.split("/") if layer.weights else []
    scope = "/".join(path[:-2])
    if scope:
        with keras.name_scope(scope):
            new.build_from_config(layer.get_build_config())
    else:
        new.build_from_config(layer.get_build_config())
    _copy_values(layer, new)
    return new


def _copy_values(layer, new) -> None:
    new.set_weights(layer.get_weights())
    for source, target in zip(layer.weights, new.weights):
        target.trainable = source.trainable
