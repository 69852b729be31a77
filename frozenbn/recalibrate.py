"""Precise BN: replace moving averages with exact population statistics."""

import logging
from typing import Any
from typing import Callable
from typing import Optional
from typing import Union

import keras
import numpy as np

from frozenbn import _checks
from frozenbn import _data
from frozenbn import _stats
from frozenbn import _walk

logger = logging.getLogger(__name__)


@_checks.old_argument_order(("steps", "verbose", "batch_size"), first=2)
def recalibrate(
    model: keras.layers.Layer,
    x: Any,
    batch_size: Optional[int] = None,
    steps: Optional[int] = None,
    verbose: Union[int, str] = "auto",
    *,
    include: Optional[Callable[[keras.layers.Layer], bool]] = None,
) -> int:
    """Sets BN moving statistics to the exact population statistics of `x`.

    Precise BN (Wu and Johnson, 2021; fvcore's `update_bn_stats`): one
    compiled pass over `x` in which every selected BN layer normalizes with
    batch statistics, as in `fit`, and everything else runs in inference
    mode; the mean and variance of all inputs of each layer, pooled exactly
    across batches, replace its `moving_mean` and `moving_variance`. Nothing
    else changes, and nothing is written if the pass fails. Layers the pass
    never calls and custom BN subclasses are left as they are, with a
    warning. docs/usage.md has the details (distribution, pooling, eager
    fallback).

    Args:
        model: A Keras model or layer.
        x: Inputs in any form `model.fit` takes (labels are ignored).
        batch_size: Batch size for array `x`; `None` is 32. Use training's.
        steps: Number of batches; `None` uses all (needed for infinite data).
        verbose: 0 silent, 1 or `"auto"` progress bar, 2 one line.
        include: Optional `include(layer) -> bool` choosing the BN layers.

    Returns:
        The number of BN layers whose statistics were replaced.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (100, 3))
    >>> frozenbn.recalibrate(model, x, verbose=0)
    1
    >>> bool(np.allclose(model.layers[0].moving_mean, x.mean(0), rtol=1e-5))
    True
    """
    _checks.check_is_layer(model, "recalibrate")
    verbose = _checks.check_verbose(verbose)
    _checks.check_include(include)
    layers, skipped = _stats.measurable_layers(
        model, include, logger, "; its statistics are left unchanged")
    if not layers:
        if skipped:
            why = ("every selected BatchNormalization layer of "
                   f"'{model.name}' is a custom subclass it skips")
        else:
            why = _checks.nothing_selected(len(_walk.batch_norm_layers(model)))
        # stacklevel 3: the caller of the decorator that keeps the old order.
        _checks.warn_unchanged("recalibrate", why, stacklevel=3)
        return 0

    batches = _data.iter_batches(x, steps=steps, batch_size=batch_size)
    target = _data.count_steps(x, steps=steps, batch_size=batch_size)
    progbar = keras.utils.Progbar(target, verbose=verbose, unit_name="step")
    with _stats.StatisticsPass(model, layers, mode=_stats.BATCH) as stats:
        for step, batch in enumerate(batches, start=1):
            stats.step(batch)
            progbar.update(step)
        pooled = stats.result()
    return _write_statistics(model, layers, pooled)


def _write_statistics(model, layers, pooled) -> int:
    """Writes the pooled statistics of every called layer; warns about the
    others; returns how many were written."""
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
        _assign_statistics(layer, pooled[layer].mean, pooled[layer].variance)
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
