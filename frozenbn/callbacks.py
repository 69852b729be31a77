"""Keras callbacks: freeze BN statistics from an epoch on; precise BN.

They apply `convert` and `recalibrate` at the right point of a running `fit`.
"""

import logging
from typing import Any
from typing import Callable
from typing import Optional
from typing import Union

import keras
import numpy as np

from frozenbn import _checks
from frozenbn import _walk
from frozenbn.convert import convert
from frozenbn.recalibrate import recalibrate

logger = logging.getLogger(__name__)


class FreezeBatchNorm(keras.callbacks.Callback):
    """Freezes the model's BatchNormalization statistics from an epoch on.

    At the start of epoch `epoch` (or of the first, if `fit` starts later)
    it runs `frozenbn.convert(model, inplace=True)` and rebuilds the train
    function: the running `fit` then normalizes with the moving statistics,
    never updates them, and keeps training gamma and beta. The epochs before
    let the statistics adapt to new data. Applied once; the model stays
    frozen after `fit` (`frozenbn.unfreeze(model)` undoes it).

    Args:
        epoch: First (0-based) epoch trained with frozen statistics.
        include: Optional `include(layer) -> bool` choosing the BN layers.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...     callbacks=[frozenbn.callbacks.FreezeBatchNorm(epoch=1)])
    >>> model.layers[1].frozen
    True
    """

    def __init__(
        self,
        epoch: int = 0,
        include: Optional[Callable[[keras.layers.Layer], bool]] = None,
    ):
        super().__init__()
        _checks.check_int("epoch", epoch, minimum=0)
        self.epoch = epoch
        self.include = _checks.check_include(include)
        self.applied = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.applied or epoch < self.epoch:
            return
        convert(self.model, inplace=True, frozen=True, include=self.include)
        _retrace(self.model)
        self.applied = True
        logger.info(
            "FreezeBatchNorm: BatchNormalization statistics frozen from "
            "epoch %d.",
            epoch,
        )


class PreciseBN(keras.callbacks.Callback):
    """Recalibrates BN statistics during `fit` (precise BN), every n epochs.

    After every `every_n_epochs`-th epoch's training, and before its
    validation (so `val_*` metrics use them), `frozenbn.recalibrate` writes
    the exact population statistics of `x`, like detectron2's `PreciseBN`
    hook. With `use_ema=True`, list `keras.callbacks.SwapEMAWeights` first.

    Args:
        x: Data in any form `frozenbn.recalibrate` takes (labels ignored),
            e.g. a few hundred batches of training data without augmentation.
        batch_size: Batch size for array `x`; `None` is 32.
        steps: Batches of `x` per recalibration; `None` uses all (set it
            for infinite data).
        verbose: `recalibrate`'s progress display. Defaults to 0.
        every_n_epochs: Recalibrate after epochs n, 2n, ... (counting from
            1). Defaults to 1.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(use_ema=True), "mse")
    >>> x, y = np.random.rand(64, 4), np.random.rand(64, 1)
    >>> history = model.fit(x, y, epochs=1, verbose=0,
    ...     validation_data=(x, y),
    ...     callbacks=[keras.callbacks.SwapEMAWeights(),
    ...                frozenbn.callbacks.PreciseBN(x)])
    """

    @_checks.old_argument_order(("steps", "every_n_epochs", "batch_size"),
                                first=2)
    def __init__(
        self,
        x: Any,
        batch_size: Optional[int] = None,
        steps: Optional[int] = None,
        verbose: Union[int, str] = 0,
        every_n_epochs: int = 1,
    ):
        super().__init__()
        if x is None:
            raise TypeError(
                "`x` is None. Pass the data to compute BN statistics on."
            )
        _checks.check_int("every_n_epochs", every_n_epochs)
        _checks.check_int("steps", steps, allow_none=True)
        _checks.check_int("batch_size", batch_size, allow_none=True)
        self.x = x
        self.batch_size = batch_size
        self.steps = steps
        self.verbose = _checks.check_verbose(verbose)
        self.every_n_epochs = every_n_epochs
        self._in_fit = False
        self._epoch = None
        self._done = True
        self._ema = None

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._ema = _StatisticsOfWeights(self.model) if _uses_ema(
            self.model
        ) else None

    def on_train_end(self, logs=None):
        self._in_fit = False
        if self._ema is not None and not self._ema.install_known():
            # `fit` wrote EMA weights that were never measured.
            self._done = False
            self._recalibrate()
        self._ema = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._done = (epoch + 1) % self.every_n_epochs != 0
        if self._ema is not None:
            self._ema.install_known(restore_displaced=True)

    def on_test_begin(self, logs=None):
        # The epoch's validation starts here, after the variables are
        # synced (JAX): recalibrate so it uses the new statistics.
        if self._in_fit:
            self._recalibrate()

    def on_test_batch_begin(self, batch, logs=None):
        if self._ema is not None and batch == 0:
            self._ema.check_evaluated()

    def on_test_end(self, logs=None):
        if self._ema is not None:
            self._ema.install_known(restore_displaced=True)

    def on_epoch_end(self, epoch, logs=None):
        self._recalibrate()
        if self._ema is not None:
            self._ema.install_known()

    def _recalibrate(self):
        if self._done:
            return
        self._done = True
        if self._ema is not None:
            self._ema.before_recalibration()
        count = recalibrate(self.model, self.x, batch_size=self.batch_size,
                            steps=self.steps, verbose=self.verbose)
        if self._ema is not None:
            self._ema.after_recalibration()
        logger.info(
            "PreciseBN: recalibrated %d BN layer(s) after epoch %d.",
            count,
            self._epoch,
        )


class _StatisticsOfWeights:
    """BN statistics that follow EMA weights swapped in and out of a model.

    Keyed by a weight fingerprint that matches within float32 rounding:
    TensorFlow's `SwapEMAWeights` swaps by additions, not bit-exactly.
    """

    def __init__(self, model):
        self._model = model
        self._statistics = [
            getattr(layer, name)
            for layer in _walk.batch_norm_layers(model)
            for name in ("moving_mean", "moving_variance", "moving_stddev")
            if getattr(layer, name, None) is not None
        ]
        self._known = []  # (fingerprint, statistics) pairs
        self._displaced = None  # statistics of weights not seen yet
        self._installed = None  # the installed entry of `_known`
        self._measured = None  # fingerprint of the last recalibration
        self._warned = False

    def before_recalibration(self):
        self._displaced = self._snapshot()
        self._known = []

    def after_recalibration(self):
        self._measured = _fingerprint(self._model)
        self._installed = (self._measured, self._snapshot())
        self._known.append(self._installed)

    def install_known(self, restore_displaced: bool = False) -> bool:
        """Installs the known statistics of the current weights; returns if any.

        With `restore_displaced`, unseen weights (training weights swapped
        back) get the statistics the last recalibration displaced.
        """
        if not self._known:
            return False
        weights = _fingerprint(self._model)
        entry = next((e for e in self._known if _same(e[0], weights)), None)
        if entry is None:
            if not restore_displaced or self._displaced is None:
                return False
            entry = (weights, self._displaced)
            self._known.append(entry)
            self._displaced = None
        if entry is not self._installed:
            for variable, value in zip(self._statistics, entry[1]):
                variable.assign(value)
            self._installed = entry
        return True

    def check_evaluated(self):
        if self._warned or self._measured is None:
            return
        if not _same(_fingerprint(self._model), self._measured):
            self._warned = True
            logger.warning(
                "PreciseBN recalibrated other weights than the ones being "
                "evaluated: list keras.callbacks.SwapEMAWeights before "
                "PreciseBN in `callbacks`, so that PreciseBN measures the "
                "EMA weights it swaps in."
            )

    def _snapshot(self):
        return [keras.ops.convert_to_numpy(v).copy() for v in self._statistics]


def _fingerprint(model) -> np.ndarray:
    """A few values of every trainable variable: tells weight sets apart."""
    parts = [
        keras.ops.convert_to_numpy(keras.ops.reshape(v, (-1,))[:16])
        for v in model.trainable_variables
    ]
    return np.concatenate([np.asarray(p, np.float64) for p in parts] or [[]])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-7))


def _uses_ema(model) -> bool:
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    optimizers = getattr(optimizer, "optimizers", None) or [optimizer]
    return any(getattr(o, "use_ema", False) for o in optimizers)


def _retrace(model) -> None:
    """Makes the next train step trace the model again (`frozen` is read
    at trace time)."""
    if hasattr(model, "make_train_function"):
        model.make_train_function(force=True)
