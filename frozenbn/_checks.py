"""Argument checks shared by frozenbn's public functions, one wording each.

Every public entry point validates its arguments here, so the same mistake
gets the same message whichever tool it is made with.
"""

from typing import Any
from typing import Optional

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
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    return value


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
    """Returns `value` if it is 0, 1 or 2 (Keras's `verbose` values)."""
    if isinstance(value, bool) or value not in (0, 1, 2):
        raise TypeError(f"`verbose` must be 0, 1 or 2. Received: {value!r}")
    return int(value)


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
