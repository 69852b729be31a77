"""Argument checks shared by frozenbn's public functions, one wording each.

Every public entry point validates its arguments here, so the same mistake
gets the same message whichever tool it is made with.
"""

import functools
import warnings
from typing import Any
from typing import Optional
from typing import Sequence

import numpy as np


def check_bool(name: str, value: Any) -> bool:
    """Returns `value` if it is a Python bool, else raises a `TypeError`.

    Example:

    >>> check_bool("frozen", True)
    True
    """
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a Python bool (True or False). "
            f"Received: {name}={value!r} of type {_type_name(value)}."
        )
    return value


def _type_name(value: Any) -> str:
    # numpy.bool_ is named "bool": qualify every type but the builtins.
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__.split('.')[0]}.{kind.__qualname__}"


def check_include(include: Any) -> Any:
    """Returns `include` if it is None or a callable, else raises a `TypeError`.

    Example:

    >>> check_include(None) is None
    True
    """
    if include is None or callable(include):
        return include
    hint = ""
    if isinstance(include, str):
        hint = (f" To select layers by name, pass include=lambda layer: "
                f"layer.name == {include!r}.")
    raise TypeError(
        "`include` must be a callable include(layer) -> bool or None. "
        f"Received: include={include!r}.{hint}"
    )


def check_int(
    name: str, value: Any, minimum: int = 1, allow_none: bool = False
) -> Optional[int]:
    """Returns `value` as an int if it is an int >= `minimum` (or allowed None).

    A non-int is a `TypeError`, an int below `minimum` a `ValueError`.

    Example:

    >>> check_int("steps", None, allow_none=True) is None
    True
    >>> check_int("batch_size", 32)
    32
    """
    if value is None and allow_none:
        return None
    rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"`{name}` must be {rule}" + (" or None" if allow_none else "")
            + f". Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(f"`{name}` must be {rule}. Received: {name}={value}")
    return int(value)


def check_verbose(value: Any) -> int:
    """Keras's `verbose`: 0, 1, 2 or "auto" (which is 1, as in `predict`).

    Example:

    >>> check_verbose("auto")
    1
    """
    if isinstance(value, str) and value == "auto":
        return 1
    rule = f'`verbose` must be 0, 1, 2 or "auto". Received: verbose={value!r}'
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(rule)
    if value not in (0, 1, 2):
        raise ValueError(rule)
    return int(value)


def old_argument_order(old_order: Sequence[str], first: int):
    """Keeps 0.1's calls working for one release, with a DeprecationWarning.

    0.1 named the data `data` and took `steps` before `batch_size`; 0.2
    follows Keras (`x`, `batch_size`, `steps`, `verbose`). `data=` is read
    as `x=`, and, if 0.1 took any, the positional arguments after the
    `first` ones (`model, x` or `self, x`) in 0.1's `old_order`, each with
    a warning that says what to write instead. Remove in 0.3.
    """

    def decorate(function):
        name = function.__qualname__.replace(".__init__", "")

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if "data" in kwargs:
                if "x" in kwargs or len(args) >= first:
                    raise TypeError(f"{name}() got `data` and `x`; pass `x`.")
                _deprecated(f"frozenbn.{name}(data=...) is now "
                            f"frozenbn.{name}(x=...), as in Keras")
                kwargs["x"] = kwargs.pop("data")
            if not old_order:  # only `data=` changed
                return function(*args, **kwargs)
            extra, args = args[first:], args[:first]
            if len(extra) > len(old_order):
                raise TypeError(f"{name}() takes {first + len(old_order)} "
                                f"positional arguments at most.")
            for arg, value in zip(old_order, extra):
                if arg in kwargs:
                    raise TypeError(f"{name}() got multiple values for "
                                    f"argument `{arg}`.")
                kwargs[arg] = value
            if extra:
                given = ", ".join(f"{a}=" for a in old_order[: len(extra)])
                _deprecated(f"positional arguments of frozenbn.{name} after "
                            f"`x` follow 0.1's order until 0.3, then Keras's "
                            f"(batch_size, steps, verbose); pass {given} by "
                            "keyword")
            return function(*args, **kwargs)

        return wrapper

    return decorate


def _deprecated(message: str) -> None:
    warnings.warn(message + ".", DeprecationWarning, stacklevel=3)


def check_is_layer(obj: Any, function_name: str) -> None:
    """Raises a `TypeError` naming `function_name` unless `obj` is a layer."""
    import keras

    if not isinstance(obj, keras.layers.Layer):
        raise TypeError(
            f"`frozenbn.{function_name}` expects a Keras model or layer. "
            f"Received: an object of type {type(obj).__name__}. Pass a "
            "`keras.Model` (load a file with `keras.models.load_model` "
            "first)."
        )


def warn_unchanged(tool: str, why: str, result: Optional[str] = None,
                   stacklevel: int = 2) -> None:
    """The one wording of a call that changed nothing: `frozenbn.TOOL
    changed nothing: WHY.`, then `The result is RESULT.` when given.
    `stacklevel` is what `warnings.warn` would take at the call site."""
    tail = f" The result is {result}." if result else ""
    warnings.warn(f"frozenbn.{tool} changed nothing: {why}.{tail}",
                  stacklevel=stacklevel + 1)


def nothing_selected(count: int, kind: str = "BatchNormalization") -> str:
    """Why a tool found no layer to work on, the one wording: `include`
    selects none of the model's `count` `kind` layers, or it has none."""
    if count:
        return f"`include` selects none of its {count} {kind} layer(s)"
    return f"it has no {kind} layer"


def one_line(error: Any, limit: Optional[int] = 300) -> str:
    """An error (or warning) message on one line, cut at `limit` characters.

    Example:

    >>> one_line(ValueError("bad    value"))
    'bad value'
    """
    text = " ".join(str(error).split()) or type(error).__name__
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 3] + "..."
