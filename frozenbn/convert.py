"""`convert`, `freeze` and `unfreeze`: put frozenbn layers into models."""

from typing import Callable
from typing import Optional

import keras

from frozenbn import _checks
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

    Every `keras.layers.BatchNormalization` selected by `include` becomes a
    `frozenbn.BatchNormalization` with the same config, the same variables
    (values bit for bit) and `frozen` set as asked. Everything else —
    structure, names, other layers and their weights, `trainable` flags,
    shared layers, nested models, compile config — is kept.

    By default the input is not touched: a copy is made with
    `keras.models.clone_model` (Sequential and Functional models, nested
    ones included, and models loaded from `.keras` files) and the copy's
    weights are set from the original's. With `inplace=True` the layers of
    the given object itself are converted; that also covers subclassed
    models, whose structure only their Python code knows, and bare layers.
    A compiled model converted in place must be compiled again, because the
    train function was traced with the old layers.

    The conversion is idempotent: layers that already are frozenbn's only
    get `frozen` set.

    Args:
        model: A built `keras.Model` (or, with `inplace=True`, any layer).
        frozen: Python bool, the `frozen` value of the converted layers.
            Defaults to `True`.
        include: Optional callable `include(layer) -> bool` choosing which
            BatchNormalization layers to convert (called on the layers of
            `model`). Defaults to all.
        inplace: Python bool. Convert `model` itself instead of a copy.
            Defaults to `False`.

    Returns:
        The converted model: a new object, or `model` if `inplace=True`.

    Raises:
        TypeError: `model` is not a Keras layer, or is a subclassed model
            and `inplace=False`.
        ValueError: `model` is not built, or contains a custom subclass of
            `keras.layers.BatchNormalization` selected by `include`.

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
    selected = _walk.batch_norm_layers(model, include)
    _check_convertible(selected)
    if inplace:
        _swap(selected, frozen)
        return model
    _check_copyable(model)
    copy = _copy(model)
    positions = {id(layer): i for i, layer in enumerate(_walk.iter_layers(model))}
    copy_layers = list(_walk.iter_layers(copy))
    _swap([copy_layers[positions[id(layer)]] for layer in selected], frozen)
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
        How many layers changed.

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

    changed = 0
    for layer in _walk.iter_layers(model):
        if not isinstance(layer, (BatchNormalization, Frozen)):
            continue
        if include is not None and not include(layer):
            continue
        if layer.frozen != frozen:
            layer.frozen = frozen
            changed += 1
    return changed


def unfreeze(
    model: keras.layers.Layer,
    include: Optional[Callable[[keras.layers.Layer], bool]] = None,
) -> int:
    """Sets `frozen=False` on the frozenbn layers of `model`; see `freeze`.

    Returns:
        How many layers changed.
    """
    _checks.check_is_layer(model, "unfreeze")
    return freeze(model, frozen=False, include=include)


def _check_convertible(layers: list) -> None:
    for layer in layers:
        cls = type(layer)
        if cls in (_walk.KERAS_BATCH_NORMALIZATION, BatchNormalization):
            continue
        raise ValueError(
            f"Cannot convert layer '{layer.name}' of class "
            f"{cls.__module__}.{cls.__qualname__}: it subclasses "
            "keras.layers.BatchNormalization, and converting it would drop "
            "its own behaviour. Skip it with `include=lambda layer: "
            f"layer.name != '{layer.name}'`, or make {cls.__name__} "
            "subclass frozenbn.BatchNormalization instead."
        )


def _check_copyable(model: keras.layers.Layer) -> None:
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise TypeError(
            "`frozenbn.convert` can copy only Sequential and Functional "
            f"models; '{model.name}' is a {type(model).__name__}, whose "
            "structure only its Python code knows. Convert it in place with "
            "`frozenbn.convert(model, inplace=True)` (make your own copy "
            "first if you need the original), or build it with "
            "`frozenbn.BatchNormalization` layers."
        )
    if not model.built or not _weights_known(model):
        raise ValueError(
            f"Model '{model.name}' is not built, so it has no weights to "
            "copy yet. Build it first: give it an `Input`, call it on a "
            "batch, or call `model.build(input_shape)`."
        )


def _is_functional(model: keras.layers.Layer) -> bool:
    # `keras.Model(inputs, outputs)` returns a Functional model; subclassed
    # models that call `super().__init__(inputs, outputs)` are Functional
    # too. Both know their graph, which is what copying needs.
    return hasattr(model, "_operations") and hasattr(model, "_nodes")


def _weights_known(model: keras.Model) -> bool:
    return all(layer.built for layer in _walk.iter_layers(model))


def _copy(model: keras.Model) -> keras.Model:
    seeded, clones = {}, []
    try:
        copy = keras.models.clone_model(
            model,
            clone_function=lambda layer: _clone_layer(layer, seeded, clones),
            recursive=True,
        )
    finally:
        for clone in clones:
            del clone.add_weight  # back to the class's method
    classes = _layer_classes(model)
    if _layer_classes(copy) != classes:
        # `clone_model` rebuilds Functional subclasses (keras-hub backbones
        # and task models) as plain Functional models; their own config
        # keeps the class.
        copy, seeded = _copy_from_config(model), {}
    source, target = model.weights, copy.weights
    mismatch = _first_mismatch(
        classes + [(w.name, w.shape) for w in source],
        _layer_classes(copy) + [(w.name, w.shape) for w in target],
    )
    if mismatch:
        raise RuntimeError(
            f"Copying model '{model.name}' did not reproduce its layers and "
            f"weights ({mismatch}): a layer's config does not rebuild it. "
            "Convert it in place with `frozenbn.convert(model, "
            "inplace=True)` instead."
        )
    for src, dst in zip(source, target):
        if seeded.get(id(dst)) is not src:
            dst.assign(_fresh_copy(src))
    _copy_trainable_flags(model, copy)
    if getattr(model, "compiled", False) and not copy.compiled:
        copy.compile_from_config(model.get_compile_config())
    return copy


def _copy_from_config(model: keras.Model) -> keras.Model:
    try:
        return keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(model)
        )
    except Exception as error:
        raise RuntimeError(
            f"Copying model '{model.name}' of class {type(model).__name__} "
            f"failed: its config does not rebuild it ({error}). Register the "
            "class with `keras.saving.register_keras_serializable`, or "
            "convert it in place with `frozenbn.convert(model, "
            "inplace=True)`."
        ) from error


def _clone_layer(
    layer: keras.layers.Layer, seeded: dict, clones: list
) -> keras.layers.Layer:
    """A layer from `layer`'s config whose weights start as `layer`'s.

    Building a clone runs every weight's initializer only for `_copy` to
    overwrite the result; for large models that is most of the time. While
    the clone builds, each weight it creates under a name that `layer` has
    (with the same shape) is initialized from `layer`'s value instead, and
    recorded in `seeded` (id of new variable -> source variable). Weights
    that do not match are left to `_copy`, which assigns them afterwards.
    The patched `add_weight` is an instance attribute listed in `clones`
    for `_copy` to remove.
    """
    clone = layer.__class__.from_config(layer.get_config())
    own = {}
    for variable in layer.weights:
        own.setdefault(variable.name, []).append(variable)
    add_weight = clone.add_weight

    def seeding_add_weight(*args, **kwargs):
        name = kwargs.get("name")
        candidates = own.get(name, [])
        shape = kwargs.get("shape", args[0] if args else None)
        if len(candidates) != 1 or tuple(shape or ()) != tuple(
            candidates[0].shape
        ):
            return add_weight(*args, **kwargs)
        source = candidates[0]
        kwargs["initializer"] = lambda shape, dtype=None: _fresh_copy(source)
        variable = add_weight(*args, **kwargs)
        seeded[id(variable)] = source
        return variable

    clone.add_weight = seeding_add_weight
    clones.append(clone)
    return clone


def _fresh_copy(variable):
    # A real copy: on JAX `assign` would otherwise share the buffer, and
    # `fit` on the copy donates (deletes) it under the original.
    return keras.ops.copy(variable.value)


def _first_mismatch(expected: list, got: list) -> str:
    for a, b in zip(expected, got):
        if a != b:
            return f"expected {a}, got {b}"
    if len(expected) != len(got):
        return f"expected {len(expected)} layers and weights, got {len(got)}"
    return ""


def _layer_classes(model: keras.Model) -> list:
    # Classes, not names: a clone renames its inputs and the sublayers that
    # custom layers create without explicit names. Same classes at the same
    # positions is what the position mapping in `convert` relies on.
    return [type(layer).__name__ for layer in _walk.iter_layers(model)]


def _copy_trainable_flags(model: keras.Model, copy: keras.Model) -> None:
    for src, dst in zip(_walk.iter_layers(model), _walk.iter_layers(copy)):
        # Set the private flag so that a container's setter does not
        # overwrite what its sublayers say; variables follow their layer.
        dst._trainable = src._trainable
    for src, dst in zip(model.weights, copy.weights):
        dst.trainable = src.trainable


def _swap(layers: list, frozen: bool) -> None:
    # frozenbn.BatchNormalization adds no state to Keras BN but `_frozen`,
    # so swapping the class keeps the object, its variables (bit for bit),
    # and every reference to it: shared layers stay shared, and subclassed
    # models that hold the layer in an attribute see the new class.
    for layer in layers:
        layer.__class__ = BatchNormalization
        layer.frozen = frozen
