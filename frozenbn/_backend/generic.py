"""The behaviour of every backend unless its module says otherwise.

One device, no native kernels, statistics steps run eagerly. The backend
modules start from these names (`from ... generic import *`) and redefine
what their backend does better.
"""

import contextlib

import keras
import numpy as np
from keras import ops

__all__ = [
    "BIAS_ADD_ON_LAST_AXIS",
    "REMOTE_BAD",
    "block_until_ready",
    "compile_step",
    "cross_replica_sum",
    "eager_step",
    "frozen_batch_norm",
    "fused_normalization",
    "local_outputs",
    "no_grad",
    "place_batch",
    "place_state",
    "placement",
    "pool_replicas",
    "records_gradients",
    "scale_channels",
    "to_numpy",
]

# Whether `x + bias` may add a channels_first layer's bias along the last
# axis (see `frozenbn._pairs`).
BIAS_ADD_ON_LAST_AXIS = False

# In a pooled statistics state: a non-finite batch seen by another replica
# or worker, not this one.
REMOTE_BAD = -2


# -- native gradients (frozenbn.layers, frozenbn.fuse) ----------------------


def records_gradients() -> bool:
    """Whether the next op may be differentiated, so that a native backward
    (`frozen_batch_norm`) pays off."""
    return False


def frozen_batch_norm(x, gamma, beta, mean, variance, axis, epsilon, layout,
                      backward=None):
    """Inference-mode BN of float32 `x`: `keras.ops.batch_normalization`.

    `gamma`, `beta` may be None; `layout` is `"last"` (channels last, any
    rank) or `"first"` (4D, channels at axis 1). A backend with a one-kernel
    backward passes `backward(forward, x, gamma, beta, mean, variance,
    epsilon, layout)`, given ones and zeros for a missing gamma or beta; the
    forward result stays this one, bit for bit.
    """
    has_scale, has_offset = gamma is not None, beta is not None

    def forward(x, gamma, beta, mean, variance):
        return ops.batch_normalization(
            x, mean, variance, axis=axis, epsilon=epsilon,
            offset=beta if has_offset else None,
            scale=gamma if has_scale else None,
        )

    if backward is None:
        return forward(x, gamma, beta, mean, variance)
    gamma = gamma if has_scale else ops.ones_like(mean)
    beta = beta if has_offset else ops.zeros_like(mean)
    return backward(forward, x, gamma, beta, mean, variance, epsilon, layout)


def scale_channels(kernel, scale):
    """`kernel * scale`, `scale` along the last axis of float32 `kernel`."""
    return kernel * scale


# -- a statistics pass's step (frozenbn._compile, frozenbn._stats) ----------


def fused_normalization(x, axis, gamma, beta, epsilon):
    """`(outputs, mean, biased_variance, count)` of a training-mode BN from
    one native kernel that reads the activations once, or None where the
    `keras.ops` path is needed."""
    return None


def no_grad():
    """A context in which no gradient is recorded."""
    return contextlib.nullcontext()


def compile_step(model, body, where):
    """`step(state, x, index)`: `body(model, state, x, index)` compiled for
    `model` and `where` (`placement`), or None to run it eagerly."""
    return None


def eager_step(model, body, where, state, x, index):
    """One step of `body` op by op."""
    return body(model, state, x, index)


def block_until_ready(state) -> None:
    """Waits for `state` where steps are dispatched asynchronously."""


# -- where a statistics pass runs (frozenbn._compile) -----------------------


def placement(model):
    """Where a pass over `model` runs its batches; None for one device."""
    return None


def place_batch(where, x):
    """This process's batch `x`, placed for a step."""
    return keras.tree.map_structure(
        lambda a: a if a is None else ops.convert_to_tensor(a), x
    )


def place_state(where, state):
    """A host state (NumPy arrays) placed where the steps keep it."""
    return keras.tree.map_structure(ops.convert_to_tensor, state)


def pool_replicas(where, state):
    """A statistics pass's state `(count, shift, mean, m2, first_bad_batch)`,
    flat over channels, pooled over all replicas and workers, as NumPy
    arrays; a channel's `first_bad_batch` is `REMOTE_BAD` where only another
    replica or worker saw a non-finite batch."""
    return keras.tree.map_structure(to_numpy, state)


def local_outputs(where, outputs):
    """A step's outputs for this process's batch, in the batch's order."""
    return outputs


def cross_replica_sum():
    """`sum_all(tensors)` over the replicas of the step being traced, or
    None where there is one replica. BN layers with `synchronized=True`
    normalize with the global batch's statistics in `fit`."""
    return None


def to_numpy(t) -> np.ndarray:
    """A tensor of this process as a NumPy array."""
    return np.asarray(ops.convert_to_numpy(t))
