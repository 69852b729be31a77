"""Tests for `frozenbn.callbacks` inside `model.fit`."""

import logging

import numpy as np
import pytest

import keras
from keras import ops

import frozenbn
from frozenbn.callbacks import FreezeBatchNorm
from frozenbn.callbacks import PreciseBN


def _np(x):
    return ops.convert_to_numpy(x)


def _model():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, name="dense"),
            keras.layers.BatchNormalization(momentum=0.5, name="bn"),
            keras.layers.ReLU(),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (n, 5)).astype("float32")
    y = x[:, :1] * 0.5 + rng.normal(0, 0.1, (n, 1)).astype("float32")
    return x, y


class _Recorder(keras.callbacks.Callback):
    """Records the BN layer's statistics and gamma at each epoch end."""

    def __init__(self):
        super().__init__()
        self.stats = []

    def on_epoch_end(self, epoch, logs=None):
        bn = self.model.get_layer("bn")
        self.stats.append(
            {
                "mean": _np(bn.moving_mean).copy(),
                "var": _np(bn.moving_variance).copy(),
                "gamma": _np(bn.gamma).copy(),
            }
        )


def test_freeze_from_an_epoch_on():
    keras.utils.set_random_seed(0)
    model = _model()
    x, y = _data()
    initial_mean = _np(model.get_layer("bn").moving_mean).copy()
    recorder = _Recorder()

    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[FreezeBatchNorm(epoch=1), recorder],
    )

    bn = model.get_layer("bn")
    assert isinstance(bn, frozenbn.BatchNormalization) and bn.frozen
    first, second, third = recorder.stats
    # Epoch 0 trains normally: the statistics move.
    assert not np.allclose(first["mean"], initial_mean)
    # Epochs 1 and 2 are frozen: statistics fixed, gamma still trained.
    for before, after in ((first, second), (second, third)):
        np.testing.assert_array_equal(before["mean"], after["mean"])
        np.testing.assert_array_equal(before["var"], after["var"])
        assert not np.array_equal(before["gamma"], after["gamma"])
    # And fit now trains the model that evaluate evaluates.
    np.testing.assert_allclose(
        _np(model(x, training=True)), _np(model(x, training=False))
    )


def test_freeze_from_the_start_and_include():
    keras.utils.set_random_seed(1)
    model = _model()
    x, y = _data()
    initial = _np(model.get_layer("bn").moving_mean).copy()
    model.fit(
        x, y, epochs=1, batch_size=16, verbose=0, callbacks=[FreezeBatchNorm()]
    )
    np.testing.assert_array_equal(
        _np(model.get_layer("bn").moving_mean), initial
    )

    model = _model()
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[FreezeBatchNorm(include=lambda layer: layer.name != "bn")],
    )
    assert type(model.get_layer("bn")) is keras.layers.BatchNormalization


def test_freeze_applies_when_fit_resumes_after_the_epoch():
    model = _model()
    x, y = _data()
    callback = FreezeBatchNorm(epoch=1)
    model.fit(x, y, epochs=4, initial_epoch=3, verbose=0, callbacks=[callback])
    assert callback.applied and model.get_layer("bn").frozen


def test_precise_bn_leaves_population_statistics():
    keras.utils.set_random_seed(2)
    model = _model()
    x, y = _data()

    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[PreciseBN(x, batch_size=len(x))],
    )

    # After the last recalibration nothing changed the statistics: they are
    # the population statistics of the Dense outputs over x.
    hidden = _np(model.get_layer("dense")(x)).astype(np.float64)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(
        _np(bn.moving_mean), hidden.mean(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        _np(bn.moving_variance), hidden.var(0), rtol=1e-5
    )


def test_precise_bn_runs_before_validation():
    keras.utils.set_random_seed(3)
    model = _model()
    x, y = _data()
    xv, yv = _data(n=32, seed=1)
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        validation_data=(xv, yv),
        callbacks=[PreciseBN(x)],
    )
    # The last epoch's val_loss was computed with the recalibrated
    # statistics, i.e. with the final model.
    assert history.history["val_loss"][-1] == pytest.approx(
        model.evaluate(xv, yv, verbose=0), rel=1e-5
    )


def test_precise_bn_every_n_epochs(caplog):
    model = _model()
    x, y = _data()
    with caplog.at_level(logging.INFO, logger="frozenbn.callbacks"):
        model.fit(
            x,
            y,
            epochs=5,
            verbose=0,
            validation_data=(x, y),
            callbacks=[PreciseBN(x, steps=1, every_n_epochs=2)],
        )
    epochs = [
        r.getMessage() for r in caplog.records if r.name == "frozenbn.callbacks"
    ]
    assert epochs == [
        "PreciseBN: recalibrated 1 BN layer(s) after epoch 1.",
        "PreciseBN: recalibrated 1 BN layer(s) after epoch 3.",
    ]
    # evaluate outside fit does not trigger it.
    caplog.clear()
    callback = PreciseBN(x)
    model.evaluate(x, y, verbose=0, callbacks=[callback])
    assert not caplog.records


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: FreezeBatchNorm(epoch=-1), ValueError,
         r"`epoch` must be an int >= 0\. Received: epoch=-1"),
        (lambda: FreezeBatchNorm(epoch=1.5), TypeError,
         r"`epoch` must be an int >= 0\. Received: epoch=1\.5"),
        (lambda: FreezeBatchNorm(include="bn"), TypeError,
         r"`include` must be a callable"),
        (lambda: PreciseBN(None), TypeError, r"`x` is None"),
        (lambda: PreciseBN(np.zeros((2, 5)), every_n_epochs=0), ValueError,
         r"`every_n_epochs` must be a positive int\. Received: every_n_epochs=0"),
        (lambda: PreciseBN(np.zeros((2, 5)), steps=0), ValueError,
         r"`steps` must be a positive int\. Received: steps=0"),
    ],
)
def test_argument_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


# Weight averaging (EMA) ----------------------------------------------------


def _ema_model():
    # A tiny kernel grows fast under BN (its gradient scales with 1/|w|),
    # so the averaged weights lag far behind the trained ones.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                8,
                name="dense",
                kernel_initializer=keras.initializers.RandomNormal(
                    stddev=0.001
                ),
            ),
            keras.layers.BatchNormalization(momentum=0.5, name="bn"),
            keras.layers.ReLU(),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.99), "mse"
    )
    return model


def _fit_mode_loss(model, x, y):
    """The loss of `model`'s weights with BN on the batch's statistics."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return float(np.mean((_np(copy(x, training=True)) - y) ** 2))


class _Statistics(keras.callbacks.Callback):
    """Records the BN statistics when each of the hooks named runs."""

    def __init__(self, *hooks):
        super().__init__()
        self.seen = {hook: [] for hook in hooks}
        for hook in hooks:
            setattr(self, hook, self._recorder(hook))

    def _recorder(self, hook):
        def record(*args, **kwargs):
            bn = self.model.get_layer("bn")
            self.seen[hook].append(
                np.concatenate([_np(bn.moving_mean), _np(bn.moving_variance)])
            )

        return record


def _fit_with_ema(callbacks):
    model = _ema_model()
    x, y = _data()
    history = model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        verbose=0,
        validation_data=(x, y),
        callbacks=callbacks,
    )
    # After fit the model holds the EMA weights (Keras's finalize step).
    gap = history.history["val_loss"][-1] / _fit_mode_loss(model, x, y)
    return model, gap


def test_ema_weights_evaluated_with_statistics_never_computed_show_a_gap():
    _, gap = _fit_with_ema([keras.callbacks.SwapEMAWeights()])
    assert gap > 1.08  # 1.12-1.16 measured on the three backends


def test_precise_bn_after_swap_ema_weights_removes_the_gap(caplog):
    x, y = _data()
    before = _Statistics("on_test_begin")
    after = _Statistics("on_test_begin", "on_test_end", "on_epoch_end")
    with caplog.at_level(logging.WARNING, logger="frozenbn.callbacks"):
        model, gap = _fit_with_ema(
            [
                before,
                keras.callbacks.SwapEMAWeights(swap_on_epoch=True),
                PreciseBN(x, batch_size=len(x)),
                after,
            ]
        )
    assert not caplog.records
    # Validation ran with the EMA weights and their own statistics: one
    # batch holding all the data, so inference equals the fit-mode pass.
    assert gap == pytest.approx(1.0, rel=1e-5)
    # The model after fit (EMA weights) keeps them.
    assert model.evaluate(x, y, batch_size=64, verbose=0) == pytest.approx(
        _fit_mode_loss(model, x, y), rel=1e-5
    )
    for epoch in range(3):
        ema = after.seen["on_test_begin"][epoch]
        training = before.seen["on_test_begin"][epoch]
        assert np.max(np.abs(ema - training)) > 1e-3
        # The training weights got their statistics back after validation,
        np.testing.assert_array_equal(
            after.seen["on_test_end"][epoch], training
        )
        # and the EMA weights swapped in again for checkpoints got theirs.
        np.testing.assert_array_equal(after.seen["on_epoch_end"][epoch], ema)


def test_precise_bn_before_swap_ema_weights_warns_and_keeps_a_gap(caplog):
    x, _ = _data()
    with caplog.at_level(logging.WARNING, logger="frozenbn.callbacks"):
        _, gap = _fit_with_ema(
            [PreciseBN(x, batch_size=len(x)), keras.callbacks.SwapEMAWeights()]
        )
    assert gap > 1.03  # precise statistics of the other (training) weights
    [warning] = [r.getMessage() for r in caplog.records]
    assert "list keras.callbacks.SwapEMAWeights before PreciseBN" in warning


def test_precise_bn_measures_the_ema_weights_fit_leaves_in_the_model():
    # No validation, no swapping: `fit` ends by writing the EMA weights
    # into the model, and PreciseBN then recalibrates them.
    model = _ema_model()
    x, y = _data()
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[PreciseBN(x, batch_size=len(x))],
    )
    assert model.evaluate(x, y, batch_size=64, verbose=0) == pytest.approx(
        _fit_mode_loss(model, x, y), rel=1e-5
    )
