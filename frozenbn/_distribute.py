"""Where a statistics pass runs its batches, and pooling across replicas.

Under a `tf.distribute` strategy each local replica pools the moments of
its share of the batch (what BN sees in `fit`) and the states of all
replicas and workers are all-reduced with sums at the end
(`_math.all_reduce_moments`). Under a JAX `keras.distribution` each
process's batch is its part of a global batch sharded over the devices, as
Keras's trainer does, and XLA reduces the moments. Otherwise: one device.
"""

import keras
import numpy as np
from keras import ops

from frozenbn import _math

# A non-finite batch seen by another replica or worker, not this one.
REMOTE_BAD = -2


def placement(model):
    """Where a pass over `model` runs its batches, or None for one device.

    The `tf.distribute` strategy that owns the model's variables
    (TensorFlow), or the current `keras.distribution` (JAX).
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        return _tf_strategy(model)
    if backend == "jax":
        return keras.distribution.distribution()
    return None


def place_batch(where, x):
    """Batch `x` of this process, placed for a step (see the module doc)."""
    backend = keras.config.backend()
    if where is not None and backend == "tensorflow":
        return _tf_split_over_replicas(where, x)
    if where is not None and backend == "jax":
        return _jax_distribute(where, x)
    return keras.tree.map_structure(
        lambda a: a if a is None else ops.convert_to_tensor(a), x
    )


def place_state(where, state):
    """A host state (NumPy arrays) placed where the steps keep it."""
    if where is not None and keras.config.backend() == "tensorflow":
        return where.experimental_distribute_values_from_function(
            lambda context: keras.tree.map_structure(_tf().constant, state)
        )
    return keras.tree.map_structure(ops.convert_to_tensor, state)


def pool_replicas(where, state):
    """The state pooled over all replicas and workers, as NumPy arrays.

    The state is a statistics pass's `(count, shift, mean, m2,
    first_bad_batch)`, flat over channels; in the result a channel's
    `first_bad_batch` is `REMOTE_BAD` where only another replica or worker
    saw a non-finite batch.
    """
    if where is not None and keras.config.backend() == "tensorflow":
        return _tf_all_reduce(where, state)
    return keras.tree.map_structure(_to_numpy, state)


def local_outputs(where, outputs):
    """A step's outputs for this process's batch: under a `tf.distribute`
    strategy the local replicas' parts joined in the order the batch was
    split, under a multi-process `keras.distribution` this process's rows
    of the global outputs; else the outputs as they are."""
    if outputs is None or where is None:
        return outputs
    if keras.config.backend() == "jax":
        return keras.tree.map_structure(_jax_local_part, outputs)
    tf = _tf()

    def join(value):
        parts = where.experimental_local_results(value)
        return tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]

    return tf.nest.map_structure(join, outputs)


def _jax_local_part(array):
    """This process's rows of a global array sharded over the batch."""
    if array.is_fully_addressable:
        return array
    rows = {}
    for shard in array.addressable_shards:
        rows.setdefault(shard.index[0].start or 0, shard.data)
    return np.concatenate([np.asarray(rows[start]) for start in sorted(rows)])


def cross_replica_sum():
    """`sum_all(tensors)` over the replicas of the running `strategy.run`.

    `None` outside a multi-replica `tf.distribute` replica context (and on
    other backends), where there is nothing to reduce. Called while a step
    is traced, by BN layers with `synchronized=True`, which normalize with
    the statistics of the global batch in `fit`.
    """
    if keras.config.backend() != "tensorflow":
        return None
    tf = _tf()
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return lambda tensors: context.all_reduce("sum", list(tensors))


def _to_numpy(t):
    if keras.config.backend() == "jax" and not getattr(
        t, "is_fully_addressable", True
    ):
        # A global array of several processes: the state is replicated,
        # so this process's first shard holds all of it.
        return np.asarray(t.addressable_data(0))
    return np.asarray(ops.convert_to_numpy(t))


def _tf_all_reduce(strategy, state):
    tf = _tf()

    def reduce(replica_state):
        context = tf.distribute.get_replica_context()

        def sum_all(tensors):
            return context.all_reduce("sum", list(tensors))

        # Copies made on the replica's device: collectives refuse a
        # function argument, which has none (MultiWorkerMirroredStrategy).
        count, shift, mean, m2, bad = (tf.identity(t) for t in replica_state)
        # Re-express every replica's mean about one shared shift (the
        # average of the replicas' shifts), so float32 stays exact.
        seen = tf.cast(count > 0, "float32")
        shift_sum, seen_sum = sum_all([shift * seen, seen])
        common = shift_sum / tf.maximum(seen_sum, 1.0)
        mean = tf.where(count > 0, (shift - common) + mean, 0.0)
        count, mean, m2 = _math.all_reduce_moments(count, mean, m2, sum_all)
        anywhere = sum_all([tf.cast(bad >= 0, "float32")])[0]
        return count, common, mean, m2, anywhere

    reduced = tf.function(lambda s: strategy.run(reduce, args=(s,)))(state)
    count, shift, mean, m2, anywhere = (
        np.asarray(strategy.experimental_local_results(t)[0])
        for t in reduced
    )
    # The first bad batch this worker's replicas saw, per channel.
    bad = np.full(count.shape, -1, "int32")
    for local in strategy.experimental_local_results(state[4]):
        local = np.asarray(local)
        bad = np.where((local >= 0) & ((bad < 0) | (local < bad)), local, bad)
    bad = np.where((bad < 0) & (anywhere > 0), REMOTE_BAD, bad)
    return count, shift, mean, m2, bad


def _tf():
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow backend only)

    return tf


def _tf_strategy(model):
    """The `tf.distribute` strategy that owns `model`'s variables, or None."""
    if keras.config.backend() != "tensorflow":
        return None
    tf = _tf()
    for variable in model.weights:
        # A variable created under a strategy holds a distributed variable.
        strategy = getattr(getattr(variable, "value", None),
                           "distribute_strategy", None)
        if isinstance(strategy, tf.distribute.Strategy):
            if tf.distribute.in_cross_replica_context() or (
                not tf.distribute.has_strategy()
            ):
                return strategy
            raise RuntimeError(
                "frozenbn computes BN statistics in cross-replica context: "
                "call it outside `strategy.run` (from your script or a "
                "callback), not inside a replica function."
            )
    return None


def _tf_split_over_replicas(strategy, x):
    """This worker's batch `x`, split over its local replicas."""
    tf = _tf()
    local = len(strategy.extended.worker_devices)
    parts = [
        keras.tree.map_structure(
            lambda a: np.array_split(np.asarray(a), local)[i], x
        )
        for i in range(local)
    ]

    def value(context):
        part = parts[context.replica_id_in_sync_group % local]
        return keras.tree.map_structure(tf.constant, part)

    return strategy.experimental_distribute_values_from_function(value)


def _jax_distribute(distribution, x):
    """This process's batch `x` as its part of a sharded global batch."""
    import jax  # noqa: PLC0415 (JAX backend only)

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


