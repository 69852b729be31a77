"""`convert`, `freeze` and `unfreeze`: put frozenbn layers into models."""

import json
import warnings
from typing import Callable
from typing import Optional

import keras

from frozenbn import _checks
from frozenbn import _clone
from frozenbn import _walk
from frozenbn.layers import BatchNormalization
from frozenbn.layers import Frozen


def convert(
    model: keras.layers.Layer,
    *,
    frozen: bool = True,
    include: Optional[Callable[[keras.layers.Layer], bool]] = None,
    inplace: bool = False,
) -> keras.layers.Layer:
    """Returns `model` with its BatchNormalization layers made frozenbn's.

    Every `keras.layers.BatchNormalization` that `include` selects becomes a
    `frozenbn.BatchNormalization` with the same config, the same variables
    (bit for bit) and `frozen` as asked; everything else is kept. By default
    a copy is made (Sequential and Functional models, nested ones, models
    loaded from `.keras`) and `model` is not touched; `inplace=True`
    converts the given object, subclassed models included (compile it
    again then). Idempotent; a call that changes nothing warns. docs/usage.md
    has the details.

    Args:
        model: A built `keras.Model` (or, with `inplace=True`, any layer).
        frozen: The `frozen` value of the converted layers.
        include: Optional `include(layer) -> bool` choosing the BN layers.
        inplace: Convert `model` itself instead of a copy.

    Returns:
        The converted model: a new object, or `model` if `inplace=True`.

    Example:

    >>> import keras, frozenbn
    >>> base = keras.applications.ResNet50(
    ...     weights=None, include_top=False, input_shape=(32, 32, 3))
    >>> frozen_base = frozenbn.convert(base)
    >>> sum(isinstance(l, frozenbn.BatchNormalization)
    ...     for l in frozen_base.layers)
    53
    """
    _checks.check_is_layer(model, "convert")
    _checks.check_bool("frozen", frozen)
    _checks.check_bool("inplace", inplace)
    _checks.check_include(include)
    # One walk: checking, copying and swapping share it.
    tree = _walk.Tree(model)
    selected = tree.batch_norm_layers(include)
    _check_convertible(selected)
    why = None
    if not selected:
        why = _checks.nothing_selected(len(tree.batch_norm_layers()))
    elif all(isinstance(layer, BatchNormalization) and layer.frozen == frozen
             for layer in selected):
        why = (f"its {len(selected)} selected BatchNormalization layer(s) "
               f"were frozenbn's already, with frozen={frozen}")
    if why:
        _checks.warn_unchanged(
            "convert", why, "the model as it was" if inplace else "a plain copy")
    if inplace:
        _swap(selected, frozen)
        _warn_if_config_forgets(model, tree.layers)
        return model
    _walk.check_graph_model(
        model, "convert",
        "Convert it in place with `frozenbn.convert(model, inplace=True)` "
        "(make your own copy first if you need the original), or build it "
        "with `frozenbn.BatchNormalization` layers.")
    copy, pairs = _clone.copy_model(model, tree)
    _swap([pairs[id(layer)] for layer in selected], frozen)
    _warn_if_config_forgets(
        copy, [pairs[id(layer)] for layer in tree.layers if id(layer) in pairs])
    return copy


def freeze(
    model: keras.layers.Layer,
    frozen: bool = True,
    include: Optional[Callable[[keras.layers.Layer], bool]] = None,
) -> int:
    """Sets `frozen` on the frozenbn layers of `model`, in place.

    Also flips `frozenbn.Frozen` wrappers. Stock Keras BatchNormalization
    layers are left alone: `convert` them first. Recompile a compiled model
    afterwards so that `fit()` sees the change.

    Args:
        model: A Keras model or layer.
        frozen: Python bool, the new value. Defaults to `True`.
        include: Optional `include(layer) -> bool` choosing the layers.

    Returns:
        How many layers changed (a warning says why when none did).

    Example:

    >>> import keras, frozenbn
    >>> model = keras.Sequential([keras.Input((4,)),
    ...     frozenbn.BatchNormalization(), frozenbn.BatchNormalization()])
    >>> frozenbn.freeze(model)
    2
    >>> frozenbn.unfreeze(model)
    2
    """
    _checks.check_is_layer(model, "freeze")
    _checks.check_bool("frozen", frozen)
    return _set_frozen(model, frozen, include, "freeze")


def unfreeze(
    model: keras.layers.Layer,
    include: Optional[Callable[[keras.layers.Layer], bool]] = None,
) -> int:
    """Sets `frozen=False` on the frozenbn layers of `model`; see `freeze`.

    Returns:
        How many layers changed.
    """
    _checks.check_is_layer(model, "unfreeze")
    return _set_frozen(model, False, include, "unfreeze")


def _set_frozen(model, frozen, include, name) -> int:
    _checks.check_include(include)
    changed = selected = 0
    tree = _walk.Tree(model)
    for layer in tree.layers:
        if not isinstance(layer, (BatchNormalization, Frozen)):
            continue
        if include is not None and not include(layer):
            continue
        selected += 1
        if layer.frozen != frozen:
            layer.frozen = frozen
            changed += 1
    if changed:
        return changed
    layers = tree.batch_norm_layers()
    ours = sum(isinstance(layer, BatchNormalization) for layer in layers)
    if selected:
        why = f"its {selected} selected layer(s) already had frozen={frozen}"
    elif ours:
        why = _checks.nothing_selected(ours, "frozenbn")
    elif layers:
        why = ("its BatchNormalization layers are Keras's; convert it first "
               "(`frozenbn.convert(model)`)")
    else:
        why = _checks.nothing_selected(0)
    _checks.warn_unchanged(name, why, stacklevel=3)
    return 0


def _check_convertible(layers: list) -> None:
    for layer in layers:
        reason = _walk.custom_batch_norm_reason(layer)
        if reason is None:
            continue
        raise ValueError(
            f"Cannot convert layer '{layer.name}': it is {reason}, and "
            "converting it would drop its own behaviour. Skip it with "
            f"`include=lambda layer: layer.name != '{layer.name}'`, or make "
            f"{type(layer).__name__} subclass frozenbn.BatchNormalization "
            "instead."
        )


def _warn_if_config_forgets(model: keras.layers.Layer, layers: list) -> None:
    """Warns when `model.save` would not record its frozenbn layers (of
    `layers`, its own): configs that hold only constructor arguments
    (keras-hub models, many subclassed ones) rebuild Keras's BN on load, with
    batch statistics again in `fit`."""
    ours = [layer for layer in layers if isinstance(layer, BatchNormalization)]
    if not ours:
        return
    try:
        config = json.dumps(keras.saving.serialize_keras_object(model))
    except Exception:  # noqa: BLE001 - unserializable: not ours to report
        return
    recorded = config.count('"registered_name": "frozenbn>BatchNormalization"')
    if recorded >= len(ours):
        return
    warnings.warn(
        f"Model '{model.name}' ({type(model).__name__}) rebuilds its layers "
        "from constructor arguments when it is loaded, so a saved file does "
        f"not record that {len(ours) - recorded} of its BatchNormalization "
        "layers are frozenbn's. After `keras.models.load_model`, call "
        "`frozenbn.convert(model, inplace=True)` again, or load it inside "
        "`with frozenbn.patch(): ...`. (Weights and inference outputs are "
        "saved exactly either way.)",
        UserWarning,
        stacklevel=3,
    )


def _swap(layers: list, frozen: bool) -> None:
    # frozenbn.BatchNormalization adds no state to Keras BN but `_frozen`,
    # so swapping the class keeps the object, its variables (bit for bit),
    # and every reference to it: shared layers stay shared, and subclassed
    # models that hold the layer in an attribute see the new class.
    for layer in layers:
        layer.__class__ = BatchNormalization
        layer.frozen = frozen
