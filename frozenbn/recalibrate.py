"""Precise BN: replace moving averages with exact population statistics."""

import logging
from typing import Any
from typing import Callable
from typing import Optional

import keras
import numpy as np

from frozenbn import _checks
from frozenbn import _data
from frozenbn import _stats
from frozenbn import _walk

logger = logging.getLogger(__name__)


def recalibrate(
    model: keras.layers.Layer,
    data: Any,
    steps: Optional[int] = None,
    verbose: int = 1,
    batch_size: int = _data.DEFAULT_BATCH_SIZE,
    *,
    include: Optional[Callable[[keras.layers.Layer], bool]] = None,
) -> int:
    """Sets BN moving statistics to the exact population statistics of `data`.

    Precise BN (Wu and Johnson, 2021; fvcore's `update_bn_stats`). During
    `fit`, BatchNormalization normalizes with each batch's statistics and
    keeps exponential moving averages of them for inference. After
    fine-tuning (few steps, small or shifted batches, a momentum tuned for
    long training) those averages lag behind the weights, and `evaluate`
    or `predict` no longer compute what `fit` optimized. `recalibrate`
    makes one pass over `data` and writes, for every selected BN layer, the
    mean and (biased) variance of *all* its inputs over the whole pass into
    `moving_mean` and `moving_variance`: the value the moving averages
    would converge to with the weights held fixed, without the
    exponential average's lag and noise.

    What each layer sees during the pass (fvcore's semantics): the model
    runs as in a `fit` forward pass for BN — every selected BN layer
    normalizes its output with the statistics of the current batch, so the
    inputs of later layers are distributed as they were in training — and
    in inference mode otherwise (Dropout and other noise layers are off,
    which makes the result deterministic). All layers are measured in one
    pass. Layers that `fit` runs in inference mode (`frozen=True`,
    `trainable=False`, inside `frozenbn.Frozen`) are treated the same way,
    which is what they will see once their statistics are recalibrated.
    Use batches like those of training: with tiny batches, batch-statistics
    normalization upstream differs from normalization by the population
    statistics (Wu and Johnson, Sec. 3).

    One compiled pass: each batch runs through one compiled step
    (`tf.function` on TensorFlow, `jax.jit` on JAX; on torch the model runs
    without autograd, with BN statistics and normalization from one fused
    kernel) that pools the moments on the device; nothing is copied to the
    host until the pass ends. The compiled step is cached on the model, so
    later calls (`callbacks.PreciseBN` every epoch) do not trace again. A
    model whose layers cannot be traced (a `call` that goes through NumPy)
    runs eagerly instead, with a warning that gives the reason; so does a
    model compiled with `run_eagerly=True`.

    Pooling is exact: batches are weighted by their number of positions
    (samples times spatial size, or unmasked positions for masked inputs),
    the variance includes the between-batch spread (law of total
    variance, Chan's update, see `frozenbn._math.pool_moments`; never a
    mean of means), unequal batches (a smaller last batch) are handled, and
    the moments are taken about a value of the data, so float32 loses
    nothing when `|mean| >> std`. A layer called several times per forward
    pass pools all its calls. Batch Renormalization layers get
    `moving_stddev = sqrt(variance + epsilon)` so that Keras's derived
    `moving_variance` stays consistent; their training-time `renorm_mean`
    and `renorm_stddev` are left as they are.

    Which layers: every `keras.layers.BatchNormalization` and
    `frozenbn.BatchNormalization` that `include` selects and the forward
    pass calls. A BN layer the forward pass never calls (some keras-hub
    models keep such sublayers) has no statistics to take: it is left as
    it is and named in a warning (logger `frozenbn.recalibrate`), and not
    counted in the return value. A custom subclass of BatchNormalization is
    skipped with a warning too, as `convert` refuses it and `fold` leaves
    it: its own `call` may do more than BN, which the measuring pass would
    not reproduce; it runs its own `call`, in inference mode.

    Only the moving statistics of the selected layers change. Nothing else
    of the model is modified: the pass does not go through the layers'
    own training branch (no momentum update, no optimizer, no `trainable`
    or `frozen` change); each BN layer's `call` is temporarily replaced on
    the instance and restored in a `finally` block, and if the pass fails
    (including NaN or inf statistics, found when the pass ends) no
    statistic is written. A compiled model needs no recompiling: the new
    values are read from the variables.

    Data parallelism (see docs/distributed.md): call it outside
    `strategy.run`, on every worker, each with its own data (its shard).
    Under a `tf.distribute` strategy (Mirrored, MultiWorkerMirrored) each
    batch is split over this worker's replicas, every replica normalizes
    its share as in `fit` (the global batch for `synchronized=True`
    layers), and the pooled moments of all replicas of all workers are
    all-reduced, so every worker writes the statistics of the union of the
    shards. Under a `keras.distribution` (JAX DataParallel, one or several
    processes) each process's batch is its part of a global batch, as in
    `fit`; every process must then give the same number of batches of the
    same size.

    Args:
        model: A Keras model (Functional, Sequential or subclassed) or layer.
        data: Inputs in any form `model.fit` takes, see
            `frozenbn._data.iter_batches`: arrays, `(x, y)`, a batched
            `tf.data.Dataset`, a `keras.utils.PyDataset`, a generator.
            Labels are ignored.
        steps: Number of batches to use; `None` uses all of `data`
            (required for infinite data).
        verbose: 0 silent, 1 progress bar, 2 one line. Defaults to 1.
        batch_size: Batch size for array `data`. Defaults to 32; use the
            batch size of training.
        include: Optional `include(layer) -> bool` choosing the BN layers
            to recalibrate. The others keep their statistics and run as
            they are (in inference mode). Defaults to all.

    Returns:
        The number of BN layers whose statistics were replaced (layers
        never called and custom subclasses, named in warnings, are not
        counted).

    Raises:
        TypeError: `model` is not a Keras layer, or `data` has a wrong type.
        ValueError: `data` is empty, `steps`/`batch_size` are invalid, or
            a batch gives NaN or inf statistics at some layer (nothing is
            written then).

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (100, 3))
    >>> frozenbn.recalibrate(model, x, verbose=0)
    1
    >>> bn = model.layers[0]
    >>> np.allclose(bn.moving_mean, x.mean(axis=0), rtol=1e-5)
    True

    Reference:
        - [Wu and Johnson, 2021](https://arxiv.org/abs/2105.07576),
          "Rethinking 'Batch' in BatchNorm".
        - [Ioffe and Szegedy, 2015](https://arxiv.org/abs/1502.03167).
    """
    _checks.check_is_layer(model, "recalibrate")
    _checks.check_verbose(verbose)
    layers, skipped = _stats.split_measurable(
        _walk.batch_norm_layers(model, include)
    )
    for layer, reason in skipped:
        logger.warning(
            "recalibrate: skipped BatchNormalization layer '%s', %s; its "
            "statistics are left unchanged.",
            layer.name,
            reason,
        )
    if not layers:
        if not skipped:
            logger.warning(
                "recalibrate: model '%s' has no BatchNormalization layer "
                "to recalibrate.",
                model.name,
            )
        return 0

    batches = _data.iter_batches(data, steps=steps, batch_size=batch_size)
    target = _data.count_steps(data, steps=steps, batch_size=batch_size)
    progbar = keras.utils.Progbar(target, verbose=verbose, unit_name="step")
    with _stats.StatisticsPass(model, layers, mode=_stats.BATCH) as stats:
        for step, x in enumerate(batches, start=1):
            stats.step(x)
            progbar.update(step)
        pooled = stats.result()

    called = [layer for layer in layers if pooled.called(layer)]
    uncalled = [layer.name for layer in layers if not pooled.called(layer)]
    if uncalled:
        logger.warning(
            "recalibrate: %d BatchNormalization layer(s) of '%s' are never "
            "called by its forward pass, so their statistics are left "
            "unchanged: %s.",
            len(uncalled),
            model.name,
            ", ".join(f"'{name}'" for name in uncalled),
        )
    for layer in called:
        stats_of_layer = pooled[layer]
        _assign_statistics(layer, stats_of_layer.mean, stats_of_layer.variance)
    if called:
        logger.info(
            "recalibrate: replaced the moving statistics of %d BN layer(s) "
            "of '%s' with population statistics over %d sample position(s).",
            len(called),
            model.name,
            int(max(pooled[layer].count for layer in called)),
        )
    return len(called)


def _assign_statistics(layer, mean: np.ndarray, var: np.ndarray) -> None:
    def assign(variable, value):
        variable.assign(np.asarray(value).astype(variable.dtype))

    assign(layer.moving_mean, mean)
    assign(layer.moving_variance, var)
    if getattr(layer, "renorm", False):
        # Keras derives moving_variance = relu(moving_stddev**2 - epsilon).
        assign(layer.moving_stddev, np.sqrt(var + layer.epsilon))
