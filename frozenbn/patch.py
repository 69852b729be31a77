"""`patch`: build frozenbn BatchNormalization layers wherever Keras would."""

import contextlib
import threading
from typing import Iterator

import keras
from keras.src import layers as _keras_src_layers

from frozenbn import _checks
from frozenbn import layers as _layers

# Where model-building code looks the class up: the public `keras.layers`
# (user code, keras-hub) and Keras's own `keras.src.layers`
# (`keras.applications`).
_MODULES = (keras.layers, _keras_src_layers)
_LOCK = threading.RLock()


@contextlib.contextmanager
def patch(frozen: bool = True) -> Iterator[None]:
    """Within the block, `keras.layers.BatchNormalization` is frozenbn's.

    Every BatchNormalization built inside the block — by your code,
    `keras.applications` or a library that uses `keras.layers` — is a
    `frozenbn.BatchNormalization` with `frozen` as given, so a backbone has
    frozenbn layers from the start and pretrained weights load into them as
    usual (same weight names and order). On exit, also when the block
    raises, `keras.layers.BatchNormalization` is Keras's class again;
    layers built inside keep their class.

    Threads: the swap of the module attribute is process-wide, and blocks
    in different threads run one at a time (a lock). The `frozen` default
    is per thread and per context: a thread that does not enter `patch`
    but builds a BatchNormalization while another thread is inside a block
    gets a frozenbn layer with `frozen=False`, which computes exactly what
    Keras's layer computes but saves under frozenbn's class name. Build
    models from one thread while a block is open if that matters.

    Args:
        frozen: Python bool, the `frozen` value of the layers built in the
            block. Defaults to `True`.

    Example:

    >>> import keras, frozenbn
    >>> with frozenbn.patch():
    ...     base = keras.applications.ResNet50(
    ...         weights=None, include_top=False, input_shape=(32, 32, 3))
    >>> bn = base.get_layer("conv1_bn")
    >>> isinstance(bn, frozenbn.BatchNormalization), bn.frozen
    (True, True)
    >>> keras.layers.BatchNormalization is frozenbn.BatchNormalization
    False
    """
    _checks.check_bool("frozen", frozen)
    with _LOCK:
        saved = [(module, module.BatchNormalization) for module in _MODULES]
        token = _layers.DEFAULT_FROZEN.set(frozen)
        try:
            for module, _ in saved:
                module.BatchNormalization = _layers.BatchNormalization
            yield
        finally:
            for module, original in saved:
                module.BatchNormalization = original
            _layers.DEFAULT_FROZEN.reset(token)
