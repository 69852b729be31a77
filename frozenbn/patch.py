"""`patch`: build frozenbn BatchNormalization layers wherever Keras would."""

import contextlib
import threading
from typing import Iterator

from frozenbn import _checks
from frozenbn import layers as _layers

_KERAS_BN = _layers.KERAS_BATCH_NORMALIZATION
_LOCK = threading.Lock()
_ACTIVE = [0]  # open blocks, over all threads


def _build_frozenbn_when_patched(cls, *args, **kwargs):
    # Installed as `keras.layers.BatchNormalization.__new__` while a block
    # is open anywhere. Only constructions of Keras's exact class, in a
    # context inside a block, build frozenbn's subclass instead; Python
    # then runs frozenbn's `__init__` with the same arguments.
    if cls is _KERAS_BN and _layers.DEFAULT_FROZEN.get() is not None:
        cls = _layers.BatchNormalization
    return super(_KERAS_BN, cls).__new__(cls, *args, **kwargs)


@contextlib.contextmanager
def patch(frozen: bool = True) -> Iterator[None]:
    """Within the block, Keras BatchNormalization layers are built as frozenbn's.

    Every `keras.layers.BatchNormalization(...)` constructed inside the
    block — by your code, `keras.applications`, keras-hub, a class bound
    before the block (`from keras.layers import BatchNormalization`, a
    default argument), or `keras.models.load_model` — is a
    `frozenbn.BatchNormalization` with `frozen` as given. A backbone thus
    has frozenbn layers from the start, and pretrained weights load into
    them as usual (same weight names and order). Subclasses of Keras
    BatchNormalization (your own BN classes) are built as they are.

    Use it also to reload a converted keras-hub model (such models rebuild
    their layers from constructor arguments when loaded). The switch is per
    thread and context; blocks nest; `keras.layers.BatchNormalization`
    itself stays Keras's class, so `isinstance` checks work as before.

    Args:
        frozen: The `frozen` value of the layers built in the block.

    Example:

    >>> import keras, frozenbn
    >>> with frozenbn.patch():
    ...     base = keras.applications.ResNet50(
    ...         weights=None, include_top=False, input_shape=(32, 32, 3))
    >>> bn = base.get_layer("conv1_bn")
    >>> type(bn).__module__, bn.frozen
    ('frozenbn.layers', True)
    >>> type(keras.layers.BatchNormalization()).__module__  # after the block
    'keras.src.layers.normalization.batch_normalization'
    """
    _checks.check_bool("frozen", frozen)
    with _LOCK:
        if _ACTIVE[0] == 0:
            _KERAS_BN.__new__ = staticmethod(_build_frozenbn_when_patched)
        _ACTIVE[0] += 1
    token = _layers.DEFAULT_FROZEN.set(frozen)
    try:
        yield
    finally:
        _layers.DEFAULT_FROZEN.reset(token)
        with _LOCK:
            _ACTIVE[0] -= 1
            if _ACTIVE[0] == 0:
                del _KERAS_BN.__new__
