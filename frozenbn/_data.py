"""Turning the `data` argument of frozenbn's tools into batches.

`recalibrate`, `audit` and the callbacks accept what `model.fit` accepts as
`x` (minus the `y=` argument): arrays, `(x, y[, sample_weight])` tuples,
`tf.data.Dataset`s, `keras.utils.PyDataset`s and Python iterables of
batches. `iter_batches` yields the model inputs of each batch;
`iter_xy` also keeps the labels and sample weights.
"""

import math
import warnings
from typing import Any
from typing import Iterator
from typing import Optional
from typing import Tuple

import keras
import numpy as np

from frozenbn import _checks

DEFAULT_BATCH_SIZE = 32


def iter_batches(
    data: Any, steps: Optional[int] = None, batch_size: Optional[int] = None
) -> Iterator[Any]:
    """Yields the model-input part `x` of each batch of `data`.

    `data` is what `model.predict` takes as `x`: arrays (a list or dict for
    several inputs) batched by `batch_size` (None: 32), `(x, y[, w])` tuples
    (`x` kept), a batched `tf.data.Dataset`, a `PyDataset` or any iterable
    of batches; as in `fit`, a batch that is a tuple or list is `(x, y[, w])`.
    `steps` caps the batches (a warning if the data runs out first) and is
    required for infinite data. TypeError for data that cannot be batched
    or is not numeric; ValueError for empty or inconsistent data.

    Example:

    >>> batches = list(iter_batches(np.zeros((70, 3)), batch_size=32))
    >>> [b.shape[0] for b in batches]
    [32, 32, 6]
    """
    for x, _, _ in iter_xy(data, steps=steps, batch_size=batch_size):
        yield x


def iter_xy(
    data: Any, steps: Optional[int] = None, batch_size: Optional[int] = None
) -> Iterator[Tuple[Any, Any, Any]]:
    """Like `iter_batches`, but yields `(x, y, sample_weight)`, None where
    `data` has none.

    Example:

    >>> x, y, w = next(iter_xy((np.zeros((4, 2)), np.ones(4))))
    >>> x.shape, y.shape, w
    ((4, 2), (4,), None)
    """
    steps = _checks.check_int("steps", steps, allow_none=True)
    batch_size = _checks.check_int("batch_size", batch_size, allow_none=True)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    source = _source(data, steps, batch_size)
    taken = 0
    for batch in source:
        if steps is not None and taken >= steps:
            break
        # Batches follow Keras's rule: a tuple or list is (x, y[, w]).
        x, y, w = keras.utils.unpack_x_y_sample_weight(batch)
        if x is None:
            raise ValueError(
                f"Batch {taken} of the data has no inputs (x is None). Each "
                "batch must be `x` or a tuple `(x, y[, sample_weight])`."
            )
        _check_numeric(x, taken)
        taken += 1
        yield x, y, w
    if taken == 0:
        raise ValueError(
            "The data yielded no batches. Pass a non-empty array, dataset or "
            "generator (a generator can be consumed only once: create a new "
            "one for each call)."
        )
    if steps is not None and taken < steps:
        warnings.warn(
            f"`x` ran out of data after {taken} of the steps={steps} "
            f"batches asked for; only those {taken} were used.",
            stacklevel=2)


def count_steps(
    data: Any, steps: Optional[int] = None, batch_size: Optional[int] = None
) -> Optional[int]:
    """How many batches `iter_batches` will yield (the progress bar's
    target); None when only consuming the data would tell.

    Example:

    >>> count_steps(np.zeros((70, 3)), batch_size=32)
    3
    >>> count_steps(np.zeros((70, 3)), steps=2)
    2
    """
    steps = _checks.check_int("steps", steps, allow_none=True)
    batch_size = _checks.check_int("batch_size", batch_size, allow_none=True)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    known = None
    if _is_array_structure(data):
        n = _num_samples(data)
        known = math.ceil(n / batch_size) if n is not None else None
    elif isinstance(data, tuple) and data and _is_inputs(data[0]):
        n = _num_samples(data[0])
        known = math.ceil(n / batch_size) if n is not None else None
    elif _is_tf_dataset(data):
        cardinality = int(data.cardinality())
        known = cardinality if cardinality >= 0 else None
    elif isinstance(data, keras.utils.PyDataset):
        try:
            known = data.num_batches
        except NotImplementedError:
            known = None
    if known is None:
        return steps
    return known if steps is None else min(known, steps)


def _source(data: Any, steps: Optional[int], batch_size: int):
    if data is None:
        raise TypeError(
            "`x` is None. Pass the inputs to compute statistics on: an "
            "array, a tuple (x, y), a tf.data.Dataset, a "
            "keras.utils.PyDataset or a generator of batches."
        )
    if isinstance(data, (str, bytes)):
        raise TypeError(
            f"`x` must be arrays or batches, not a {type(data).__name__}. "
            "To use a directory of images, load it first, e.g. with "
            "`keras.utils.image_dataset_from_directory(path)`."
        )
    if _is_array_structure(data):
        # A top-level list or dict is the inputs of a multi-input model, as
        # in `model.fit(x=[a, b])`; wrap it so it is not read as (x, y).
        return _slice_arrays((data,), batch_size)
    if isinstance(data, tuple):
        if not 1 <= len(data) <= 3:
            raise ValueError(
                "A tuple `x` must be (x,), (x, y) or (x, y, "
                f"sample_weight). Received a tuple of {len(data)} elements. "
                "For a multi-input model pass the inputs as a list or dict."
            )
        if _is_inputs(data[0]):
            return _slice_arrays(data, batch_size)
        raise TypeError(
            "The first element of an `x` tuple must be the input array(s). "
            f"Received: {type(data[0]).__name__}."
        )
    if isinstance(data, list) and data and all(
            isinstance(leaf, (int, float, np.number))
            for leaf in keras.tree.flatten(data)):
        raise TypeError(
            "`x` is a (nested) Python list of numbers. Pass an array, e.g. "
            "`np.asarray(x, dtype='float32')`."
        )
    if _is_tf_dataset(data):
        if int(data.cardinality()) == -1 and steps is None:  # INFINITE
            raise ValueError(
                "The tf.data.Dataset is infinite (it repeats). Pass `steps`, "
                "the number of batches to use."
            )
        return data.as_numpy_iterator()
    if isinstance(data, keras.utils.PyDataset):
        return iter(data)
    if hasattr(data, "__iter__") or hasattr(data, "__next__"):
        return iter(data)
    raise TypeError(
        f"Cannot make batches from `x` of type {type(data).__name__}. "
        "Pass a NumPy array, a tuple (x, y), a list/dict of arrays, a "
        "tf.data.Dataset, a keras.utils.PyDataset or a generator of batches."
    )


def _slice_arrays(structure, batch_size: int):
    arrays = keras.tree.map_structure(_as_array, structure)
    n = _num_samples(arrays)
    if n == 0:
        raise ValueError(
            "The data arrays are empty (0 samples). Pass at least one sample."
        )
    for start in range(0, n, batch_size):
        yield keras.tree.map_structure(
            lambda a: None if a is None else a[start : start + batch_size],
            arrays,
        )


def _as_array(a):
    if a is None:
        return None
    return a if isinstance(a, np.ndarray) else np.asarray(a)


def _is_array(a) -> bool:
    if isinstance(a, np.ndarray):
        return True
    # Backend tensors and other array-likes (jax.Array, torch.Tensor,
    # tf.Tensor) expose a shape and convert with np.asarray.
    return (
        hasattr(a, "shape")
        and hasattr(a, "__array__")
        and not (_is_tf_dataset(a))
    )


def _is_array_structure(data) -> bool:
    if _is_array(data):
        return True
    if isinstance(data, (list, dict)) and data:
        leaves = keras.tree.flatten(data)
        return bool(leaves) and all(_is_array(leaf) for leaf in leaves)
    return False


def _is_inputs(data) -> bool:
    # The first element of an `(x, y)` tuple: arrays, or a list, tuple or
    # dict of them (the inputs of a multi-input model, as in `fit`).
    if isinstance(data, tuple) and data:
        leaves = keras.tree.flatten(data)
        return bool(leaves) and all(_is_array(leaf) for leaf in leaves)
    return _is_array_structure(data)


def _num_samples(structure) -> Optional[int]:
    sizes = set()
    for leaf in keras.tree.flatten(structure):
        if leaf is None:
            continue
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                "Input arrays need a leading sample axis; received a scalar. "
                "Reshape it to (num_samples, ...)."
            )
        sizes.add(int(shape[0]))
    if len(sizes) > 1:
        raise ValueError(
            "The data arrays have different numbers of samples: "
            f"{sorted(sizes)}. Inputs, labels and sample weights must agree "
            "on the first axis. (If the list holds batches rather than "
            "the inputs of a multi-input model, pass `iter(batches)`.)"
        )
    return sizes.pop() if sizes else None


def _check_numeric(x, index: int) -> None:
    # Strings or Python objects would otherwise fail deep inside the
    # backend (TensorFlow: "Cast string to float is not supported").
    for leaf in keras.tree.flatten(x):
        dtype = getattr(leaf, "dtype", None)
        kind = getattr(dtype, "kind", None)  # NumPy dtypes only
        is_tf_string = getattr(dtype, "name", None) == "string"
        if kind in ("U", "S", "O", "V") or is_tf_string:
            raise TypeError(
                f"Batch {index} of the data has inputs of dtype {dtype}, "
                "not numbers. Convert them first (decode images or text, "
                "then e.g. `x.astype('float32')`)."
            )


def _is_tf_dataset(data) -> bool:
    # Without importing TensorFlow: tf.data classes live in this module tree.
    return any(
        cls.__module__.startswith("tensorflow.python.data")
        for cls in type(data).__mro__
    )
