"""Exact copies of models: same classes, same structure, weights bit for bit.

`convert` copies a model before it swaps BN classes; `fold` and `fuse` copy
the layers they keep. Copies keep the model's own class (keras-hub models
are Functional subclasses), bare `keras.Operation` nodes and never-called
sublayers; layers are matched by path (`_walk.match`), never by position.
"""

from typing import Any
from typing import Dict
from typing import Optional
from typing import Tuple

import keras

from frozenbn import _checks
from frozenbn import _keras_private
from frozenbn import _walk
from frozenbn.layers import BatchNormalization
from frozenbn.layers import keras_classes


def copy_model(
    model: keras.Model, tree: Optional[_walk.Tree] = None
) -> Tuple[keras.Model, Dict[int, Any]]:
    """A copy of `model` with the same classes, structure and weight values,
    and `{id(layer): its copy}`.

    `keras.models.clone_model` where it keeps every class, else the model's own
    config (clone_model rebuilds keras-hub backbones as plain Functional);
    weights are copied through the path matching of `_walk.match`. `tree`
    is the caller's walk of `model`, if it has one.
    """
    tree = tree or _walk.Tree(model)
    with keras_classes():  # also inside a user's `frozenbn.patch` block
        copy, seeded = _clone(model)
    pairs = None if copy is None else _walk.match(model, copy)
    if pairs is None or _structure_mismatch(tree, pairs):
        with keras_classes():
            copy, seeded = _copy_from_config(model), {}
        pairs = _walk.match(model, copy)
        mismatch = _structure_mismatch(tree, pairs)
        if not mismatch and _shares_variables(model, copy):
            mismatch = "the copy shares variables with the model"
        if mismatch:
            raise RuntimeError(
                f"Copying model '{model.name}' did not reproduce its layers "
                f"and weights ({mismatch}): a layer's config does not "
                "rebuild it. Convert it in place with `frozenbn.convert("
                "model, inplace=True)` instead (copy it yourself first if "
                "you need the original)."
            )
    _copy_values(tree.layers, pairs, seeded)
    if getattr(model, "compiled", False) and not copy.compiled:
        copy.compile_from_config(model.get_compile_config())
    return copy, pairs


class UncopyableLayer(RuntimeError):
    """A layer that its config does not rebuild; `layer` and `reason` say which."""

    def __init__(self, layer, reason: str):
        self.layer, self.reason = layer, reason
        super().__init__(
            f"{type(layer).__name__} '{layer.name}' cannot be rebuilt from "
            f"its config: {reason}"
        )


def copy_layer(layer, config: Optional[dict] = None):
    """A new, unbuilt layer (or operation) from `layer`'s (or the given) config.

    As `keras.models.clone_model` does, except that a config holding the
    layer's own variables goes through `keras.saving` serialization, so the
    copy never shares a variable. Raises `UncopyableLayer` if the config does
    not rebuild the layer.
    """
    config = layer.get_config() if config is None else config
    try:
        with keras_classes():  # also inside a user's `frozenbn.patch` block
            clone = layer.__class__.from_config(config)
    except Exception as error:  # noqa: BLE001 - any failure means the same
        raise UncopyableLayer(layer, _checks.one_line(error)) from error
    if not isinstance(layer, keras.layers.Layer) or not _shares_variables(
        layer, clone
    ):
        return clone
    try:
        with keras_classes():
            clone = keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(layer)
            )
    except Exception as error:  # noqa: BLE001
        raise UncopyableLayer(layer, _checks.one_line(error)) from error
    if _shares_variables(layer, clone):
        raise UncopyableLayer(
            layer, "its config holds its own variables, so a copy shares them"
        )
    return clone


def _shares_variables(a, b) -> bool:
    return bool(set(map(id, a.weights)) & set(map(id, b.weights)))


def copy_weights(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Copies every weight value of `source` into `target`, its copy.

    Layers are matched by their path (`frozenbn._walk.match`), weights by
    layer and order, never by one flat list: a copy may list its sublayers
    in another order. Only layers that hold weights in `source` must have a
    counterpart with the same weights; sublayers that `source` never built
    keep the copy's values.

    Raises:
        RuntimeError: the copy's layers or weights do not correspond.
    """
    tree = _walk.Tree(source)
    pairs = _walk.match(source, target)
    mismatch = _structure_mismatch(tree, pairs)
    if mismatch:
        raise RuntimeError(
            f"The copy of '{source.name}' does not correspond to it "
            f"({mismatch}); please report this with the model's class."
        )
    _copy_values(tree.layers, pairs, {})


def _copy_values(layers: list, pairs: dict, seeded: dict) -> None:
    done = set()
    for src_layer in layers:
        dst_layer = pairs.get(id(src_layer))
        if dst_layer is None:
            continue
        for src, dst in zip(_keras_private.own_weights(src_layer),
                            _keras_private.own_weights(dst_layer)):
            if id(src) in done:
                continue  # a variable shared by several layers
            done.add(id(src))
            if seeded.get(id(dst)) is not src:
                dst.assign(_fresh_copy(src))
            dst.trainable = src.trainable
        _keras_private.copy_trainable_flag(src_layer, dst_layer)
        if type(src_layer) is BatchNormalization and type(dst_layer) is not (
            BatchNormalization
        ):
            # Rebuilt from a custom layer's config as Keras BN: the copy
            # keeps what the source was converted to.
            dst_layer.__class__ = BatchNormalization
            dst_layer.frozen = src_layer.frozen


def _clone(model: keras.Model):
    """`(copy, seeded)` from `clone_model`, or `(None, {})` if it fails."""
    seeded, clones = {}, []
    try:
        copy = keras.models.clone_model(
            model,
            clone_function=lambda layer: _clone_layer(layer, seeded, clones),
            recursive=True,
        )
    except Exception:  # noqa: BLE001 - a config that does not round-trip
        # through `clone_model`; the model's own config may still work.
        return None, {}
    finally:
        for clone in clones:
            del clone.add_weight  # back to the class's method
    return copy, seeded


def _copy_from_config(model: keras.Model) -> keras.Model:
    try:
        return keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(model)
        )
    except Exception as error:
        raise RuntimeError(
            f"Copying model '{model.name}' of class {type(model).__name__} "
            f"failed: its config does not rebuild it ({_checks.one_line(error)}). "
            "Convert it in place with `frozenbn.convert(model, inplace=True)` "
            "(copy it yourself first if you need the original), or register "
            "the failing class with `keras.saving.register_keras_serializable`."
        ) from error


def _clone_layer(layer, seeded: dict, clones: list):
    """A layer from `layer`'s config whose weights start as `layer`'s.

    While the clone builds, each weight created under a name and shape that
    `layer` has is initialized from `layer`'s value (recorded in `seeded`)
    instead of running its initializer, most of the time on large models;
    `_copy` assigns the rest. The patched `add_weight` is listed in `clones`
    for `_clone` to remove. Bare operations are copied through their config.
    """
    clone = copy_layer(layer)
    if not isinstance(layer, keras.layers.Layer):
        return clone
    own = {}
    for variable in _keras_private.own_weights(layer):
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


def _structure_mismatch(tree: _walk.Tree, pairs: Optional[dict]) -> str:
    """Why the matched copy of `tree.root` is not faithful, or "" if it is."""
    if pairs is None:
        return "the copy's layers could not be matched to the model's"
    for layer in tree.layers:
        other = pairs.get(id(layer))
        if other is None:
            if _keras_private.own_weights(layer) or _walk.is_batch_norm(layer):
                problem = "has no counterpart in the copy"
                break
            continue
        if not _walk.same_kind(other, layer):
            problem = (f"is a {type(layer).__name__} but its copy is a "
                       f"{type(other).__name__}")
            break
        expected = [(w.name, tuple(w.shape))
                    for w in _keras_private.own_weights(layer)]
        got = [(w.name, tuple(w.shape))
               for w in _keras_private.own_weights(other)]
        if expected and expected != got:
            problem = f"has weights {expected}, its copy {got}"
            break
    else:
        return ""
    return f"layer '{tree.path(layer)}' {problem}"
