import os
import threading

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing

KERAS_BN = keras.layers.BatchNormalization


def _resnet(weights=None):
    return keras.applications.ResNet50(
        weights=weights, include_top=False, input_shape=(32, 32, 3)
    )


def _bn_layers(model):
    return [l for l in model.layers if isinstance(l, KERAS_BN)]


def test_applications_build_frozen_layers_and_load_weights(tmp_path):
    stock = testing.randomize_batch_norm(_resnet())
    path = os.path.join(tmp_path, "resnet50.weights.h5")
    stock.save_weights(path)
    with frozenbn.patch():
        # The name stays Keras's class (isinstance checks work); what it
        # builds inside the block is frozenbn's.
        assert keras.layers.BatchNormalization is KERAS_BN
        model = _resnet(weights=path)
    assert keras.layers.BatchNormalization is KERAS_BN
    bns = _bn_layers(model)
    assert len(bns) == 53
    assert all(type(l) is frozenbn.BatchNormalization and l.frozen for l in bns)
    testing.assert_weights_equal(stock, model)  # pretrained weights, as usual
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    assert np.array_equal(
        testing.to_numpy(stock(x, training=False)),
        testing.to_numpy(model(x, training=True)),
    )
    assert type(_bn_layers(_resnet())[0]) is KERAS_BN  # nothing leaked


def test_flag_nesting_and_restore_on_error():
    with frozenbn.patch(frozen=False):
        assert frozenbn.BatchNormalization().frozen is False
        with frozenbn.patch():
            assert keras.layers.BatchNormalization().frozen is True
        assert keras.layers.BatchNormalization().frozen is False
        assert type(KERAS_BN()) is frozenbn.BatchNormalization
    with pytest.raises(RuntimeError, match="boom"):
        with frozenbn.patch():
            raise RuntimeError("boom")
    assert keras.layers.BatchNormalization is KERAS_BN
    assert type(keras.layers.BatchNormalization()) is KERAS_BN
    assert frozenbn.BatchNormalization().frozen is False
    with pytest.raises(TypeError, match="must be a Python bool"):
        with frozenbn.patch(frozen="yes"):
            pass
    assert keras.layers.BatchNormalization is KERAS_BN


def test_tools_still_see_keras_layers_inside_a_block():
    model = keras.Sequential([keras.Input((3,)), KERAS_BN(name="stock")])
    with frozenbn.patch():
        converted = frozenbn.convert(model)
        assert type(converted.get_layer("stock")) is frozenbn.BatchNormalization
        assert type(model.get_layer("stock")) is KERAS_BN
        folded, report = frozenbn.fold(model)
        assert type(folded.get_layer("stock")) is KERAS_BN  # copied as is
        assert frozenbn.recalibrate(model, np.ones((4, 3)), verbose=0) == 1


def test_classes_bound_before_the_block_are_patched_too():
    # keras-hub binds `norm_layer=keras.layers.BatchNormalization` as a
    # default argument at import; user code does
    # `from keras.layers import BatchNormalization`.
    def block(norm_layer=KERAS_BN):
        return norm_layer(axis=-1)

    class OwnBatchNorm(KERAS_BN):
        pass

    with frozenbn.patch():
        assert type(block()) is frozenbn.BatchNormalization
        assert type(OwnBatchNorm()) is OwnBatchNorm  # subclasses stay
        loaded = keras.layers.deserialize(
            keras.layers.serialize(KERAS_BN(name="bn"))
        )
        assert type(loaded) is frozenbn.BatchNormalization and loaded.frozen
    assert type(block()) is KERAS_BN
    assert "__new__" not in vars(KERAS_BN)  # the hook is gone


def test_other_threads_get_keras_behaviour():
    built = {}

    def build():
        built["layer"] = keras.layers.BatchNormalization()

    with frozenbn.patch():
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
        assert type(keras.layers.BatchNormalization()) is frozenbn.BatchNormalization
    # The switch is per thread: the other thread built Keras's own class.
    assert type(built["layer"]) is KERAS_BN
