"""JAX: `jax.jit` statistics steps and `keras.distribution` sharding.

Frozen BN keeps autodiff (XLA fuses it). A statistics pass is a `jax.jit`
of the model's `stateless_call`, at most two steps in flight. Under a JAX
`keras.distribution` each process's batch is its part of a global batch
sharded over the devices, as Keras's trainer does, and XLA reduces the
moments.
"""

import functools
import inspect

import jax
import keras
import numpy as np

from frozenbn._backend import generic
from frozenbn._backend.generic import *  # noqa: F401,F403 (the defaults)


def compile_step(model, body, where):
    if not getattr(model, "jit_compile", True):
        return None
    jitted = jax.jit(functools.partial(_stateless, model, body))
    return lambda state, x, index: jitted(
        *_variable_values(model), state, x, index
    )


def eager_step(model, body, where, state, x, index):
    return _stateless(model, body, *_variable_values(model), state, x, index)


def _stateless(model, body, trainable, non_trainable, state, x, index):
    takes_training = _takes_training(type(model))

    def run_model(inputs, **kwargs):
        if not takes_training:  # as `Layer.__call__`, which this bypasses
            kwargs.pop("training", None)
        return model.stateless_call(
            trainable, non_trainable, inputs, **kwargs
        )[0]

    return body(run_model, state, x, index)


@functools.lru_cache(maxsize=None)
def _takes_training(model_class) -> bool:
    parameters = inspect.signature(model_class.call).parameters.values()
    return any(p.name == "training" or p.kind is p.VAR_KEYWORD
               for p in parameters)


def _variable_values(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def block_until_ready(state) -> None:
    jax.block_until_ready(state)


def placement(model):
    """The current `keras.distribution`, or None."""
    return keras.distribution.distribution()


def place_batch(distribution, x):
    """This process's batch `x` as its part of a sharded global batch."""
    if distribution is None:
        return generic.place_batch(None, x)

    def place(a):
        a = np.asarray(a)
        layout = distribution.get_data_layout(a.shape).backend_layout
        shards = layout.mesh.shape[distribution.batch_dim_name]
        if a.shape[0] % shards and jax.process_count() == 1:
            # A last batch that does not divide over the devices: every
            # device computes the whole batch (same statistics).
            replicated = jax.sharding.NamedSharding(
                layout.mesh, jax.sharding.PartitionSpec()
            )
            return jax.device_put(a, replicated)
        return jax.make_array_from_process_local_data(layout, a)

    return keras.tree.map_structure(place, x)


def pool_replicas(distribution, state):
    # As generic's, with this module's `to_numpy` (XLA already reduced it).
    return keras.tree.map_structure(to_numpy, state)


def local_outputs(distribution, outputs):
    # Under a multi-process distribution: this process's rows.
    if outputs is None or distribution is None:
        return outputs
    return keras.tree.map_structure(_local_part, outputs)


def _local_part(array):
    """This process's rows of a global array sharded over the batch."""
    if array.is_fully_addressable:
        return array
    rows = {}
    for shard in array.addressable_shards:
        rows.setdefault(shard.index[0].start or 0, shard.data)
    return np.concatenate([np.asarray(rows[start]) for start in sorted(rows)])


def to_numpy(t) -> np.ndarray:
    if not getattr(t, "is_fully_addressable", True):
        # A global array of several processes: the state is replicated,
        # so this process's first shard holds all of it.
        return np.asarray(t.addressable_data(0))
    return generic.to_numpy(t)
