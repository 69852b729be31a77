"""`convert` on keras-hub backbones and task models, built offline."""

import os

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing

keras_hub = pytest.importorskip("keras_hub")


def _resnet_backbone():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(32, 32, 3),
    )


def _efficientnet_backbone():
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[16, 16],
        stackwise_output_filters=[16, 24],
        stackwise_expansion_ratios=[1, 6],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        input_shape=(32, 32, 3),
        dropout=0.0,
    )


def _images():
    return np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")


def _count(model, cls):
    return sum(isinstance(l, cls) for l in model._flatten_layers())


@pytest.mark.parametrize(
    "make,count",
    [(_resnet_backbone, 6), (_efficientnet_backbone, 7)],
    ids=["ResNetBackbone", "EfficientNetBackbone"],
)
def test_backbones_keep_their_class_and_weights(make, count):
    backbone = testing.randomize_batch_norm(make())
    converted = frozenbn.convert(backbone)
    assert type(converted) is type(backbone)
    assert _count(converted, frozenbn.BatchNormalization) == count
    assert _count(backbone, frozenbn.BatchNormalization) == 0  # untouched
    testing.assert_weights_equal(backbone, converted)
    x = _images()
    expected = testing.to_numpy(backbone(x, training=False))
    assert np.array_equal(expected, testing.to_numpy(converted(x, training=True)))


def test_task_model_and_keras_file(tmp_path):
    backbone = testing.randomize_batch_norm(_resnet_backbone())
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=3
    )
    converted = frozenbn.convert(classifier)
    assert type(converted) is type(classifier)
    assert type(converted.backbone) is type(backbone)
    assert _count(converted, frozenbn.BatchNormalization) == 6
    testing.assert_weights_equal(classifier, converted)
    path = os.path.join(tmp_path, "classifier.keras")
    converted.save(path)
    # keras-hub models rebuild their layers from hyperparameters when they
    # load, so the BN class is not in the file: plain loading gives Keras BN
    # (with the saved weights); loading inside `frozenbn.patch()` gives
    # frozen frozenbn layers again.
    plain = keras.models.load_model(path)
    assert _count(plain, frozenbn.BatchNormalization) == 0
    testing.assert_weights_equal(converted, plain)
    with frozenbn.patch():
        loaded = keras.models.load_model(path)
    bns = [
        l for l in loaded._flatten_layers()
        if isinstance(l, keras.layers.BatchNormalization)
    ]
    assert len(bns) == 6
    assert all(type(l) is frozenbn.BatchNormalization and l.frozen for l in bns)
    x = _images()
    assert np.array_equal(
        testing.to_numpy(classifier(x, training=False)),
        testing.to_numpy(loaded(x, training=True)),
    )
