"""The BN algebra shared by fold, fuse, recalibrate and audit, in one place.

Folding a BN into a linear layer (`scale_and_shift`), one batch's moments
(`batch_moments`) and their exact pooling over batches and replicas
(`pool_moments`, `all_reduce_moments`, `PooledMoments`).
"""

from typing import Optional

import numpy as np
from keras import ops


def scale_and_shift(gamma, beta, mean, variance, epsilon, bias, rsqrt):
    """`(scale, shift)`: `BN(layer(x)) = layer_without_bias(x) * scale + shift`.

    For an inference-mode BN after a linear layer; `gamma`, `beta`, `bias`
    may be `None`. `fold` passes NumPy and `1 / sqrt`, `fuse` `keras.ops` and
    `ops.rsqrt` (so gradients reach every input): one formula for both.

    >>> scale, shift = scale_and_shift(None, None, np.array([1.0]),
    ...     np.array([4.0]), 0.0, None, lambda v: 1 / np.sqrt(v))
    >>> scale.tolist(), shift.tolist()
    ([0.5], [-0.5])
    """
    scale = rsqrt(variance + epsilon)
    if gamma is not None:
        scale = gamma * scale
    shift = -mean * scale if bias is None else (bias - mean) * scale
    if beta is not None:
        shift = shift + beta
    return scale, shift


def batch_moments(x, axis: int, mask=None):
    """Per-channel `(mean, biased variance, count)` of one batch.

    Two-pass in float32 or wider (stable when the mean is large). `mask`
    follows Keras BN: the shape of `x` without the channel axis; masked
    positions are not counted. `count` is an int, or a scalar tensor when
    masked or traced with an unknown dimension.

    >>> m, v, n = batch_moments(np.array([[1.0], [3.0]], "float32"), axis=-1)
    >>> float(m[0]), float(v[0]), n
    (2.0, 1.0, 2)
    """
    x = ops.cast(x, _wide_float(x.dtype))
    rank = len(x.shape)
    axis = axis % rank
    axes = [i for i in range(rank) if i != axis]
    if mask is None:
        mean = ops.mean(x, axis=axes, keepdims=True)
        var = ops.mean(ops.square(x - mean), axis=axes)
        count = 1
        shape = ops.shape(x)
        for i in axes:
            count = count * shape[i]
        return ops.squeeze(mean, axis=axes), var, count
    weights = ops.cast(ops.expand_dims(mask, axis=-1), x.dtype)
    weights = ops.broadcast_to(weights, ops.shape(x))
    total = ops.sum(weights, axis=axes, keepdims=True)
    safe_total = ops.maximum(total, 1.0)
    mean = ops.sum(x * weights, axis=axes, keepdims=True) / safe_total
    var = ops.sum(ops.square(x - mean) * weights, axis=axes) / ops.squeeze(
        safe_total, axis=axes
    )
    # Every channel sees the same positions: the count is per position.
    count = ops.sum(ops.take(ops.reshape(total, (-1,)), 0))
    return ops.squeeze(mean, axis=axes), var, count


def _wide_float(dtype) -> str:
    # float16/bfloat16 statistics overflow.
    return "float64" if "float64" in str(dtype) else "float32"


class PooledMoments:
    """Pooled mean, biased variance and count of a BN layer's inputs (float64).

    The host-side result of a statistics pass; `mean` and `variance` are
    `None` before any batch.

    >>> pooled = PooledMoments.from_state(3.0, [3.0], [8.0])
    >>> pooled.mean.tolist(), pooled.variance.tolist(), pooled.count
    ([3.0], [2.6666666666666665], 3.0)
    """

    def __init__(self):
        self.count = 0.0
        self.mean = None
        self._m2 = None  # sum of squared deviations from the running mean

    @classmethod
    def from_state(cls, count, mean, m2) -> "PooledMoments":
        """Reads a `pool_moments` state `(count, mean, m2)`; 0 is empty."""
        pooled = cls()
        if float(count) > 0:
            pooled.count = float(count)
            pooled.mean = np.asarray(mean, np.float64).reshape(-1)
            pooled._m2 = np.asarray(m2, np.float64).reshape(-1)
        return pooled

    @property
    def variance(self) -> Optional[np.ndarray]:
        """The biased population variance, or `None` before any batch."""
        if self.mean is None:
            return None
        return np.maximum(self._m2 / self.count, 0.0)


def pool_moments(state, mean, var, count):
    """Adds one batch's moments to a float32 state `(count, mean, m2)`.

    Exact population moments, as if all batches were one (never a mean of
    means), by Chan et al.'s pairwise update, stable when `|mean| >> std`;
    `m2` is the sum of squared deviations. A `count == 0` batch changes
    nothing. Start from zeros.

    >>> state = (0.0, np.zeros(1, "float32"), np.zeros(1, "float32"))
    >>> state = pool_moments(state, np.array([1.0]), np.array([0.0]), 1)
    >>> state = pool_moments(state, np.array([4.0]), np.array([1.0]), 2)
    >>> n, mean, m2 = (ops.convert_to_numpy(t) for t in state)
    >>> float(n), float(mean[0]), round(float(m2[0] / n), 6)
    (3.0, 3.0, 2.666667)
    """
    n, mu, m2 = (ops.convert_to_tensor(t, "float32") for t in state)
    nb = ops.cast(count, "float32")
    present = nb > 0
    zeros = ops.zeros_like(mu)
    delta = ops.where(present, ops.cast(mean, "float32") - mu, zeros)
    var = ops.where(present, ops.cast(var, "float32"), zeros)
    total = n + nb
    weight = nb / ops.maximum(total, 1.0)
    return (
        total,
        mu + delta * weight,
        m2 + var * nb + ops.square(delta) * (n * weight),
    )


def all_reduce_moments(count, mean, m2, sum_all):
    """Pools the `(count, mean, m2)` states of all replicas or workers.

    Exact with sum-reductions only (what every backend's collectives offer),
    weighting parts by their counts. `count` has the shape of `mean`;
    `sum_all(list) -> list` sums each tensor over all parts and is called
    twice. Returns the pooled state, the same on every part.

    >>> # Two parts, {1} and {3, 5}, stacked on axis 0.
    >>> n, mean, m2 = all_reduce_moments(
    ...     np.array([1.0, 2.0]), np.array([1.0, 4.0]), np.array([0.0, 2.0]),
    ...     lambda ts: [ops.sum(t, axis=0, keepdims=True) for t in ts])
    >>> n, mean, m2 = (ops.convert_to_numpy(t) for t in (n, mean, m2))
    >>> float(n[0]), float(mean[0]), round(float(m2[0] / n[0]), 6)
    (3.0, 3.0, 2.666667)
    """
    count, mean, m2 = (ops.convert_to_tensor(t) for t in (count, mean, m2))
    present = count > 0  # an empty part's moments may be NaN
    mean = ops.where(present, mean, ops.zeros_like(mean))
    m2 = ops.where(present, m2, ops.zeros_like(m2))
    total, weighted = sum_all([count, count * mean])
    pooled_mean = weighted / ops.maximum(total, 1.0)
    spread = m2 + count * ops.square(mean - pooled_mean)
    return total, pooled_mean, sum_all([spread])[0]
