"""The numeric core shared by frozenbn's tools.

- `scale_and_shift`: a linear layer followed by a BN layer in inference
  mode as one kernel scale and one shift, used by `fold` and `fuse`.
- `batch_moments`: per-channel mean, biased variance and sample count of one
  batch, with Keras BN's mask convention, in `keras.ops`.
- `pool_moments` / `all_reduce_moments`: the exact population mean and
  variance of a stream of batches from their per-batch moments (the
  precise-BN estimator, Chan et al.'s pairwise update), as tensors in
  `keras.ops` for a compiled pass (batch after batch, and across replicas
  or workers with nothing but sums).
- `PooledMoments`: the result on the host, in float64.
"""

from typing import Optional

import numpy as np
from keras import ops


def scale_and_shift(gamma, beta, mean, variance, epsilon, bias, rsqrt):
    """`(scale, shift)` with `BN(layer(x)) = layer_without_bias(x) * scale +
    shift` for a BN layer in inference mode after a linear layer.

    `scale = gamma * rsqrt(variance + epsilon)` and `shift = (bias - mean) *
    scale + beta`, the algebra of torch's `fuse_conv_bn_weights`. `gamma`,
    `beta` and `bias` may be `None` (`scale=False`, `center=False`, no
    bias). One rule for `fold`, in float64 NumPy (`rsqrt` is `1 / sqrt`),
    and `fuse`, in `keras.ops` (`ops.rsqrt`), so gradients reach every input.

    Example:

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
    """Per-channel mean, biased variance and count of one batch.

    Two-pass (`mean((x - mean)^2)`) in float32 or wider, which is more
    accurate than `E[x^2] - E[x]^2` when the mean is large. A `mask` follows
    Keras BN's convention: it has the shape of `x` without the last axis, and
    masked-out positions count neither in the sums nor in the count.

    Args:
        x: A tensor of rank >= 2.
        axis: The channel axis.
        mask: Optional boolean-like tensor, see above.

    Returns:
        `(mean, variance, count)`: two per-channel tensors and the number of
        positions per channel (a Python int, or a scalar tensor when masked
        or when a dimension is unknown while tracing).

    Example:

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
            # An int, or a scalar tensor for a dimension unknown when traced.
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
    # Statistics of float16/bfloat16 activations overflow; compute them in
    # float32 (float64 stays float64).
    return "float64" if "float64" in str(dtype) else "float32"


class PooledMoments:
    """The pooled mean, biased variance and count of one BN layer's inputs.

    The host-side result of a statistics pass: `from_state` reads the
    `(count, mean, m2)` state that `pool_moments` accumulated on the device
    (float64 from here on). Before any batch, `mean` and `variance` are
    `None` and `count` is 0.

    Example:

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
        """The pooled moments of a `pool_moments` state `(count, mean, m2)`.

        A state with `count == 0` (no batch) gives an empty `PooledMoments`.
        """
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
    """Adds one batch's moments to a pooled state, in `keras.ops`.

    The mean and biased variance of all positions of all batches, exactly
    as if they were one batch (fvcore's population-variance estimator, never
    a mean of means), by Chan, Golub and LeVeque's pairwise update, which
    does not cancel when `|mean| >> std`. `state` is `(count, mean, m2)` in
    float32, `m2` the sum of squared deviations from `mean`. A batch with
    `count == 0` (an empty shard, a fully masked batch) changes nothing. The
    caller takes the moments about a value close to the data (and adds it
    back to the final mean), so float32 loses nothing to a large mean.

    Args:
        state: The pooled `(count, mean, m2)` so far; zeros to start.
        mean: The batch's per-channel mean.
        var: The batch's per-channel biased variance.
        count: The batch's number of positions per channel.

    Returns:
        The new `(count, mean, m2)`.

    Example:

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
    """Pools `(count, mean, m2)` states held by several replicas or workers.

    Exact and stable with only sum-reductions, which every backend's
    collectives offer: a first all-reduce gives the total count and the
    count-weighted sum of means, a second the sum of each part's `m2` plus its
    between-part spread `count * (mean - pooled_mean)^2`. Never a mean of
    means: parts of different sizes weigh by their counts (flax #2417).

    Args:
        count: This part's counts, as a tensor of the shape of `mean` (a
            flat layout repeats each layer's count over its channels).
        mean: This part's means.
        m2: This part's sums of squared deviations from `mean`.
        sum_all: `sum_all(tensors) -> tensors`, the sum of each tensor of
            a list over all parts (one batched all-reduce); called twice.

    Returns:
        The pooled `(count, mean, m2)`, the same on every part.

    Example:

    >>> # Two parts, {1} and {3, 5}, stacked on axis 0 of one array here.
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
