"""Precise BN: replace moving averages with exact population statistics."""

import logging
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional

import keras
import numpy as np
from keras import ops

from frozenbn import _checks
from frozenbn import _data
from frozenbn import _math
from frozenbn import _walk
from frozenbn.layers import Frozen

logger = logging.getLogger(__name__)

# How each patched BN layer normalizes during a statistics pass.
BATCH = "batch"  # with the current batch's statistics (BN in `fit`)
AS_IN_FIT = "as_in_fit"  # batch or moving statistics, as `fit` would


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

    Pooling is exact: batches are weighted by their number of positions
    (samples times spatial size, or unmasked positions for masked inputs),
    the variance includes the between-batch spread (law of total
    variance), and unequal batches (a smaller last batch) are handled, see
    `frozenbn._math.PooledMoments`. A layer called several times per
    forward pass pools all its calls. Batch Renormalization layers get
    `moving_stddev = sqrt(variance + epsilon)` so that Keras's derived
    `moving_variance` stays consistent; their training-time `renorm_mean`
    and `renorm_stddev` are left as they are.

    Only the moving statistics of the selected layers change. Nothing else
    of the model is modified: the pass does not go through the layers'
    own training branch (no momentum update, no optimizer, no `trainable`
    or `frozen` change); each BN layer's `call` is temporarily replaced on
    the instance and restored in a `finally` block, and if the pass fails
    no statistic is written. A compiled model needs no recompiling: the
    new values are read from the variables.

    Under a `tf.distribute` strategy, call it outside `strategy.run` (as
    here, in cross-replica context): the pass runs on whole batches, which
    gives the statistics reduced over all replicas exactly, and the
    assignment to mirrored variables updates every replica.

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
        The number of BN layers whose statistics were replaced.

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
    layers = _walk.batch_norm_layers(model, include)
    if not layers:
        logger.warning(
            "recalibrate: model '%s' has no BatchNormalization layer "
            "to recalibrate.",
            model.name,
        )
        return 0

    pooled = PooledStatistics(layers)
    batches = _data.iter_batches(data, steps=steps, batch_size=batch_size)
    target = _data.count_steps(data, steps=steps, batch_size=batch_size)
    progbar = keras.utils.Progbar(target, verbose=verbose, unit_name="step")
    with StatisticsPass(layers, pooled, mode=BATCH):
        for step, x in enumerate(batches, start=1):
            pooled.batch = step - 1
            model(x)
            progbar.update(step)

    updated = 0
    for layer in layers:
        stats = pooled[layer]
        if stats.mean is None:
            logger.warning(
                "recalibrate: BatchNormalization layer '%s' was not called "
                "on the data; its statistics are left unchanged.",
                layer.name,
            )
            continue
        _assign_statistics(layer, stats.mean, stats.variance)
        updated += 1
    logger.info(
        "recalibrate: replaced the moving statistics of %d BN layer(s) of "
        "'%s' with population statistics over %d sample position(s).",
        updated,
        model.name,
        int(max(pooled[layer].count for layer in layers)),
    )
    return updated


class PooledStatistics:
    """The sink of a `StatisticsPass`: pooled moments per BN layer.

    Rejects non-finite statistics (see `check_finite_statistics`), naming
    the batch in `batch`, which the caller advances. `self[layer]` is that
    layer's `frozenbn._math.PooledMoments`. Shared by `recalibrate` and
    `audit`.
    """

    def __init__(self, layers):
        self._pooled = {id(layer): _math.PooledMoments() for layer in layers}
        self.batch = 0

    def __call__(self, layer, mean, var, count) -> None:
        mean, var = ops.convert_to_numpy(mean), ops.convert_to_numpy(var)
        check_finite_statistics(layer, mean, var, self.batch)
        self._pooled[id(layer)].update(mean, var, ops.convert_to_numpy(count))

    def __getitem__(self, layer) -> _math.PooledMoments:
        return self._pooled[id(layer)]


def check_finite_statistics(layer, mean, var, batch: int) -> None:
    """Raises a `ValueError` naming `layer` if its batch moments are not finite.

    NaN or inf inputs (or activations that overflow) would otherwise turn
    the pooled statistics into NaN, and every later prediction with them.
    The check runs during the pass, before anything is written, so the
    model is left unchanged.
    """
    if np.all(np.isfinite(mean)) and np.all(np.isfinite(var)):
        return
    raise ValueError(
        f"Batch {batch} of the data gives non-finite statistics (NaN or "
        f"inf) at BatchNormalization layer '{layer.name}': the data or the "
        "activations before that layer contain NaN or inf values (check "
        "with `np.isfinite(x).all()`), or overflow the layer's dtype. No "
        "statistics were changed."
    )


def _assign_statistics(layer, mean: np.ndarray, var: np.ndarray) -> None:
    def assign(variable, value):
        variable.assign(np.asarray(value).astype(variable.dtype))

    assign(layer.moving_mean, mean)
    assign(layer.moving_variance, var)
    if getattr(layer, "renorm", False):
        # Keras derives moving_variance = relu(moving_stddev**2 - epsilon).
        assign(layer.moving_stddev, np.sqrt(var + layer.epsilon))


def uses_batch_statistics_in_fit(model: keras.layers.Layer) -> Dict[int, bool]:
    """For each BN layer id: does `fit` normalize it with batch statistics?

    False for `frozen=True` frozenbn layers, `trainable=False` layers (the
    Keras rule) and layers inside an active `frozenbn.Frozen` wrapper. A
    `training=False` recorded in a Functional graph is seen at call time.
    """
    forced = set()
    for layer in _walk.iter_layers(model):
        if isinstance(layer, Frozen) and layer.frozen:
            forced.update(id(bn) for bn in _walk.batch_norm_layers(layer))
    return {
        id(bn): bool(
            bn.trainable
            and not getattr(bn, "frozen", False)
            and id(bn) not in forced
        )
        for bn in _walk.batch_norm_layers(model)
    }


class StatisticsPass:
    """Temporarily routes BN layers through a measuring `call`.

    Inside the `with` block each given layer's `call` is replaced, on the
    instance only, by one that hands the per-channel moments of its input
    (`frozenbn._math.batch_moments`) to `sink(layer, mean, var, count)` and
    normalizes:

    - `mode=BATCH`: always with the batch's statistics;
    - `mode=AS_IN_FIT`: with the batch's statistics where `fit` would
      (see `uses_batch_statistics_in_fit`) unless the call receives
      `training=False`, otherwise with the moving statistics.

    The layer's variables are never written. The original `call` is put
    back on exit, even after an error. Call the model with `training`
    unset, so that other layers run in inference mode. Private to frozenbn
    (used by `recalibrate` and `audit`).
    """

    def __init__(self, layers, sink, mode: str = BATCH, batch_in_fit=None):
        self._layers = list(layers)
        self._sink = sink
        self._mode = mode
        self._batch_in_fit = batch_in_fit or {}
        self._saved = []

    def __enter__(self):
        try:
            for layer in self._layers:
                self._saved.append((layer, layer.__dict__.get("call")))
                _set_call(layer, self._measuring_call(layer))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info):
        self._restore()
        return False

    def _restore(self):
        while self._saved:
            layer, original = self._saved.pop()
            if original is None:
                _del_call(layer)
            else:
                _set_call(layer, original)

    def _measuring_call(self, layer):
        sink, mode = self._sink, self._mode
        batch_in_fit = self._batch_in_fit.get(id(layer), True)

        def call(inputs, training=None, mask=None):
            if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
                mask = None  # Keras BN raises here; statistics ignore it.
            dtype = keras.backend.result_type(inputs.dtype, "float32")
            x = ops.cast(inputs, dtype)
            mean, var, count = _math.batch_moments(x, layer.axis, mask)
            sink(layer, mean, var, count)
            if mode == BATCH or (batch_in_fit and training is not False):
                norm_mean, norm_var = ops.cast(mean, dtype), ops.cast(
                    var, dtype
                )
            else:
                norm_mean = ops.cast(layer.moving_mean, dtype)
                norm_var = ops.cast(layer.moving_variance, dtype)
            outputs = ops.batch_normalization(
                x,
                norm_mean,
                norm_var,
                axis=layer.axis,
                offset=(
                    None if layer.beta is None else ops.cast(layer.beta, dtype)
                ),
                scale=(
                    None
                    if layer.gamma is None
                    else ops.cast(layer.gamma, dtype)
                ),
                epsilon=layer.epsilon,
            )
            return ops.cast(outputs, layer.compute_dtype)

        return call


def _set_call(layer, fn) -> None:
    # Bypass Layer.__setattr__'s tracking (and torch.nn.Module's): a plain
    # instance attribute shadows the class's `call`.
    object.__setattr__(layer, "call", fn)


def _del_call(layer) -> None:
    if "call" in layer.__dict__:
        object.__delattr__(layer, "call")
