"""Export, save/load and resume of converted and folded models (TensorFlow)."""

import os

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing

pytestmark = testing.requires_tensorflow


def _model():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn_conv"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="dense"),
            keras.layers.BatchNormalization(name="bn_dense"),
            keras.layers.Dense(1, name="head"),
        ],
        name="small",
    )
    return testing.randomize_batch_norm(model, seed=5)


def _x(n=16, seed=6):
    return np.random.default_rng(seed).normal(0.3, 1.5, (n, 6, 6, 3)).astype(
        "float32"
    )


def _bn_state(model):
    return {
        layer.name: (
            type(layer),
            getattr(layer, "frozen", None),
            testing.to_numpy(layer.moving_mean),
            testing.to_numpy(layer.moving_variance),
        )
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def _assert_bn_state_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        cls_a, frozen_a, mean_a, var_a = a[name]
        cls_b, frozen_b, mean_b, var_b = b[name]
        assert cls_a is cls_b and frozen_a == frozen_b, name
        np.testing.assert_array_equal(mean_a, mean_b)
        np.testing.assert_array_equal(var_a, var_b)


def test_export_converted_model_to_saved_model(tmp_path):
    import tensorflow as tf

    model = frozenbn.convert(_model())
    x = _x()
    expected = testing.to_numpy(model(x, training=False))
    # Frozen: the training-mode graph computes the same thing.
    np.testing.assert_array_equal(
        testing.to_numpy(model(x, training=True)), expected
    )
    path = str(tmp_path / "converted_savedmodel")
    model.export(path, verbose=False)

    reloaded = tf.saved_model.load(path)
    served = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)

    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    wrapped = keras.Sequential([keras.Input((6, 6, 3)), layer])
    np.testing.assert_allclose(
        testing.to_numpy(wrapped(x)), expected, rtol=0, atol=1e-6
    )
    # The exported graph is not the training branch: other inputs give
    # other outputs, batch-independent (a batch of one equals its row).
    single = reloaded.serve(tf.constant(x[:1])).numpy()
    np.testing.assert_allclose(single, expected[:1], rtol=0, atol=1e-6)


def test_export_folded_model_to_saved_model(tmp_path):
    import tensorflow as tf

    converted = frozenbn.convert(_model())
    folded, report = frozenbn.fold(converted)
    assert sorted(report.pairs) == [
        testing.paths_in(converted, "conv", "bn_conv"),
        testing.paths_in(converted, "dense", "bn_dense")]
    assert not any(
        isinstance(l, keras.layers.BatchNormalization) for l in folded.layers
    )
    x = _x()
    expected = testing.to_numpy(converted(x, training=False))
    path = str(tmp_path / "folded_savedmodel")
    folded.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)  # keep it: it owns the variables
    served = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    np.testing.assert_allclose(
        testing.to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6
    )


def test_keras_file_round_trip_of_converted_model_safe_mode(tmp_path):
    model = frozenbn.convert(_model(), include=lambda l: l.name == "bn_conv")
    with pytest.warns(UserWarning, match="freeze changed nothing"):
        frozenbn.freeze(model, frozen=False, include=lambda l: False)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    path = str(tmp_path / "converted.keras")
    model.save(path)
    for safe_mode in (True, False):
        loaded = keras.models.load_model(path, safe_mode=safe_mode)
        _assert_bn_state_equal(_bn_state(model), _bn_state(loaded))
        assert type(loaded.get_layer("bn_dense")) is (
            keras.layers.BatchNormalization
        )
        assert loaded.get_layer("bn_conv").frozen is True
        testing.assert_weights_equal(model, loaded)
        x = _x()
        np.testing.assert_array_equal(
            testing.to_numpy(loaded(x, training=False)),
            testing.to_numpy(model(x, training=False)),
        )
    # An unfrozen layer comes back unfrozen.
    frozenbn.unfreeze(model)
    model.save(path)
    assert keras.models.load_model(path).get_layer("bn_conv").frozen is False


class _StopAt(keras.callbacks.Callback):
    """Simulates a crash at the start of an epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"interrupted at epoch {epoch}")


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def _compiled_converted():
    keras.utils.set_random_seed(7)
    model = frozenbn.convert(_model())
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def test_backup_and_restore_resume_keeps_statistics_and_flags(tmp_path):
    x = _x(32)
    y = np.random.default_rng(8).normal(0, 1, (32, 1)).astype("float32")
    fit_args = dict(batch_size=8, epochs=4, shuffle=False, verbose=0)

    reference = _compiled_converted()
    pretrained = _bn_state(reference)
    reference.fit(x, y, **fit_args)

    backup = str(tmp_path / "backup")
    first = _compiled_converted()
    with pytest.raises(RuntimeError, match="interrupted at epoch 2"):
        first.fit(
            x,
            y,
            callbacks=[keras.callbacks.BackupAndRestore(backup), _StopAt(2)],
            **fit_args,
        )
    assert os.listdir(backup)

    # A new process would rebuild (and re-convert) the model, then resume.
    resumed = _compiled_converted()
    epochs = _Epochs()
    resumed.fit(
        x,
        y,
        callbacks=[keras.callbacks.BackupAndRestore(backup), epochs],
        **fit_args,
    )
    assert epochs.seen == [2, 3]
    _assert_bn_state_equal(_bn_state(resumed), pretrained)
    assert all(state[1] is True for state in _bn_state(resumed).values())
    # Resuming gives the uninterrupted run's weights (optimizer state too).
    for a, b in zip(
        testing.weights_of(resumed), testing.weights_of(reference)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    gamma0 = testing.to_numpy(_compiled_converted().get_layer("bn_conv").gamma)
    assert not np.array_equal(
        testing.to_numpy(resumed.get_layer("bn_conv").gamma), gamma0
    )
    # A finished run deletes its backup.
    assert not os.path.exists(backup) or not os.listdir(backup)
