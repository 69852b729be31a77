"""Tests for `frozenbn.fold` (BN folding into Conv/Dense)."""

import numpy as np
import pytest

import keras
from keras import layers

import frozenbn
from tests import testing
from frozenbn.fold import FOLDABLE_TYPES
from frozenbn.fold import fold

# Folded and unfolded float32 models round differently; the DESIGN target is
# 1e-5 relative. Compared elementwise as |a - b| <= 1e-5 * max|a| (relative
# to the output's magnitude, since single outputs can be ~0).
RTOL = 1e-5


def _randomize_biases(model, seed=1):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith("/bias"):
            w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))


def _assert_same_predictions(model, folded, x):
    expected = testing.to_numpy(model(x, training=False))
    got = testing.to_numpy(folded(x, training=False))
    atol = RTOL * max(np.abs(expected).max(), 1e-3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def _bn_after_foldable(model):
    """Names of BN layers whose input comes straight from a foldable layer."""
    found = []
    for layer in frozenbn._keras_private.iter_layers(model):
        if frozenbn._walk.is_batch_norm(layer):
            for node in layer._inbound_nodes:
                for tensor in node.input_tensors:
                    op = tensor._keras_history.operation
                    if isinstance(op, FOLDABLE_TYPES):
                        found.append(layer.name)
    return found


def test_sequential_conv_bn_relu():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, use_bias=False, name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.ReLU(name="relu"),
        ]
    )
    testing.randomize_batch_norm(model)
    before = [testing.to_numpy(w).copy() for w in model.weights]

    folded, report = fold(model)

    assert isinstance(folded, keras.Sequential)
    assert [l.name for l in folded.layers] == ["conv", "relu"]
    assert folded.get_layer("conv").use_bias is True
    assert report.pairs == [testing.paths_in(model, "conv", "bn")]
    assert report.left == []
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same_predictions(model, folded, x)
    # The original is untouched.
    assert len(model.layers) == 3 and model.get_layer("conv").use_bias is False
    for old, w in zip(before, model.weights):
        np.testing.assert_array_equal(old, testing.to_numpy(w))


def test_functional_frozenbn_and_report_text():
    inputs = keras.Input((6, 5))
    h = layers.Dense(4, name="dense")(inputs)
    h = frozenbn.BatchNormalization(frozen=True, name="fbn")(h)
    h = layers.Activation("relu", name="act")(h)
    h = layers.BatchNormalization(name="after_act")(h)
    model = keras.Model(inputs, h)
    testing.randomize_batch_norm(model)

    folded, report = fold(model)

    dense, fbn, after_act = testing.paths_in(model, "dense", "fbn", "after_act")
    assert report.pairs == [(dense, fbn)]
    assert [path for path, _ in report.left] == [after_act]
    assert "Activation 'act'" in report.left[0][1]
    text = str(report)
    assert "Folded 1" in text and f"{dense} <- {fbn}" in text and after_act in text
    x = np.random.default_rng(1).normal(size=(3, 6, 5)).astype("float32")
    _assert_same_predictions(model, folded, x)




@pytest.mark.parametrize("case", sorted(testing.LINEAR_LAYERS))
@pytest.mark.parametrize("use_bias", [False, True])
def test_each_foldable_layer(case, use_bias):
    shape, make = testing.LINEAR_LAYERS[case]
    layer = make()
    layer.use_bias = use_bias
    channels_first = getattr(layer, "data_format", None) == "channels_first"
    bn = layers.BatchNormalization(
        axis=1 if channels_first else -1, epsilon=0.01
    )
    inputs = keras.Input(shape)
    model = keras.Model(inputs, layers.Activation("tanh")(bn(layer(inputs))))
    testing.randomize_batch_norm(model)
    _randomize_biases(model)

    folded, report = fold(model)

    assert report.pairs == [testing.paths_in(model, layer.name, bn.name)], report
    assert testing.count_layers(folded, keras.layers.BatchNormalization) == 0
    x = np.random.default_rng(2).normal(size=(2,) + shape).astype("float32")
    _assert_same_predictions(model, folded, x)


@pytest.mark.parametrize(
    "center, scale", [(False, True), (True, False), (False, False)]
)
def test_bn_without_gamma_or_beta(center, scale):
    model = keras.Sequential(
        [
            keras.Input((4,)),
            layers.Dense(3),
            layers.BatchNormalization(center=center, scale=scale),
        ]
    )
    testing.randomize_batch_norm(model)
    folded, report = fold(model)
    assert len(report.pairs) == 1
    _assert_same_predictions(model, folded, np.ones((2, 4), "float32"))


def test_unfoldable_cases_are_left_with_reasons():
    inputs = keras.Input((8, 8, 3))
    bn_input = layers.BatchNormalization(name="bn_input")(inputs)
    shared_out = layers.Conv2D(4, 3, padding="same", name="two_consumers")(
        bn_input
    )
    a = layers.BatchNormalization(name="bn_shared")(shared_out)
    b = layers.ReLU()(shared_out)
    h = layers.Add()([a, b])
    h = layers.Conv2D(4, 3, activation="relu", name="conv_relu")(h)
    h = layers.BatchNormalization(name="bn_after_relu_conv")(h)
    h = layers.Conv2D(4, 1, name="conv_axis")(h)
    h = layers.BatchNormalization(axis=1, name="bn_wrong_axis")(h)
    model = keras.Model(inputs, h)
    testing.randomize_batch_norm(model)

    folded, report = fold(model)

    reasons = testing.by_name(model, report.left)
    assert report.pairs == []
    assert set(reasons) == {
        "bn_input",
        "bn_shared",
        "bn_after_relu_conv",
        "bn_wrong_axis",
    }
    assert "input of model" in reasons["bn_input"]
    assert "2 consumers" in reasons["bn_shared"]
    assert "activation 'relu'" in reasons["bn_after_relu_conv"]
    assert "channel axis" in reasons["bn_wrong_axis"]
    assert testing.count_layers(folded, keras.layers.BatchNormalization) == 4
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same_predictions(model, folded, x)


def test_channels_first_bias_shortcut_on_tensorflow_is_left():
    # Keras 3.15's TF `ops.add` applies a (1, C, 1, 1) bias along the last
    # axis when that axis also has size C; fold must not rely on the bias.
    conv = layers.Conv2D(5, 3, data_format="channels_first", name="conv")
    inputs = keras.Input((3, 7, 7))  # output (5, 5, 5)
    model = keras.Model(inputs, layers.BatchNormalization(axis=1)(conv(inputs)))
    testing.randomize_batch_norm(model)
    folded, report = fold(model)
    if keras.config.backend() == "tensorflow":
        assert report.pairs == [] and "bias_add" in report.left[0][1]
    else:
        assert report.pairs == [
            testing.paths_in(model, "conv", model.layers[-1].name)]
    x = np.random.default_rng(7).normal(size=(2, 3, 7, 7)).astype("float32")
    _assert_same_predictions(model, folded, x)


def test_conv_called_twice_is_left():
    conv = layers.Conv2D(3, 1, name="shared_conv")
    inputs = keras.Input((4, 4, 3))
    h = layers.BatchNormalization(name="bn")(conv(inputs))
    model = keras.Model(inputs, conv(h))
    folded, report = fold(model)
    assert report.pairs == []
    assert "called 2 times" in testing.by_name(model, report.left)["bn"]
    _assert_same_predictions(model, folded, np.ones((1, 4, 4, 3), "float32"))


def test_nested_models_are_folded_recursively():
    inner_in = keras.Input((8, 8, 3))
    inner = layers.Conv2D(4, 3, name="inner_conv")(inner_in)
    inner = layers.BatchNormalization(name="inner_bn")(inner)
    backbone = keras.Model(inner_in, layers.ReLU()(inner), name="backbone")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            backbone,
            layers.BatchNormalization(name="bn_after_model"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(5, name="head"),
            layers.BatchNormalization(name="head_bn"),
        ]
    )
    testing.randomize_batch_norm(model)
    _randomize_biases(model)

    folded, report = fold(model)

    root = model.name
    assert sorted(report.pairs) == [
        (f"{root}/backbone/inner_conv", f"{root}/backbone/inner_bn"),
        (f"{root}/head", f"{root}/head_bn"),
    ]
    assert [bn for bn, _ in report.left] == [f"{root}/bn_after_model"]
    assert testing.count_layers(folded, keras.layers.BatchNormalization) == 1
    assert folded.get_layer("backbone") is not backbone
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same_predictions(model, folded, x)


@pytest.mark.parametrize("frozen", [True, False])
def test_models_wrapped_in_frozen_are_folded_and_rewrapped(frozen):
    inner_in = keras.Input((8, 8, 3))
    inner = layers.Conv2D(4, 3, name="inner_conv")(inner_in)
    inner = layers.BatchNormalization(name="inner_bn")(inner)
    backbone = keras.Model(inner_in, layers.ReLU()(inner), name="backbone")
    wrapper = frozenbn.Frozen(backbone, frozen=frozen, name="wrapper")
    wrapper.trainable = False
    model = keras.Sequential([keras.Input((8, 8, 3)), wrapper,
                              layers.GlobalAveragePooling2D(),
                              layers.Dense(2, name="head")])
    testing.randomize_batch_norm(model)
    _randomize_biases(model)

    folded, report = fold(model)

    root = model.name
    assert report.pairs == [(f"{root}/wrapper/backbone/inner_conv",
                             f"{root}/wrapper/backbone/inner_bn")]
    assert report.left == []
    copy = folded.get_layer("wrapper")
    assert isinstance(copy, frozenbn.Frozen) and copy is not wrapper
    assert (copy.frozen, copy.trainable) == (frozen, False)
    assert testing.count_layers(folded, keras.layers.BatchNormalization) == 0
    x = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same_predictions(model, folded, x)


@pytest.mark.parametrize(
    "name, expected_bn",
    [
        ("ResNet50", 53),
        # The model sweep folds one model of each family on every push.
        pytest.param("MobileNetV2", 52, marks=pytest.mark.full),
        pytest.param("EfficientNetB0", 49, marks=pytest.mark.full),
    ],
)
def test_applications(name, expected_bn):
    model = getattr(keras.applications, name)(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    testing.randomize_batch_norm(model, seed=5)
    assert testing.count_layers(model, keras.layers.BatchNormalization) == expected_bn

    folded, report = fold(model)

    # In these backbones every BN directly follows a bias-free convolution.
    assert len(report.pairs) == expected_bn and report.left == []
    assert testing.count_layers(folded, keras.layers.BatchNormalization) == 0
    assert _bn_after_foldable(folded) == []
    assert len(folded.layers) == len(model.layers) - expected_bn
    x = np.random.default_rng(6).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    _assert_same_predictions(model, folded, x)


def test_rejects_subclassed_unbuilt_and_non_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 1)
            self.bn = layers.BatchNormalization()

        def call(self, x):
            return self.bn(self.conv(x))

    net = Net()
    net(np.ones((1, 4, 4, 1), "float32"))
    with pytest.raises(TypeError, match="Functional"):
        fold(net)
    with pytest.raises(ValueError, match="not built"):
        fold(keras.Sequential([layers.Dense(2), layers.BatchNormalization()]))
    with pytest.raises(TypeError, match="fold"):
        fold("model.keras")


def test_bn_inside_custom_layer_is_reported_left():
    @keras.saving.register_keras_serializable(package="test_fold")
    class Block(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = layers.Conv2D(2, 1)
            self.bn = layers.BatchNormalization(name="block_bn")

        def call(self, x):
            return self.bn(self.conv(x))

    model = keras.Sequential([keras.Input((4, 4, 1)), Block(name="block")])
    testing.randomize_batch_norm(model)
    with pytest.warns(UserWarning, match=r"fold changed nothing: none of its "
                      r"1 BatchNormalization layer\(s\) qualifies"):
        folded, report = fold(model)
    assert report.pairs == []
    assert "custom layer" in dict(report.left)[f"{model.name}/block/block_bn"]
    _assert_same_predictions(model, folded, np.ones((1, 4, 4, 1), "float32"))


def test_report_is_a_dataclass_with_defaults():
    report = frozenbn.RewriteReport("fold")
    assert report.pairs == [] and report.left == []
    assert str(report).startswith("Folded 0")
    assert frozenbn.FoldReport is frozenbn.FuseReport is frozenbn.RewriteReport
    report.pairs.append(("m/conv", "m/bn"))
    for old in ("folded", "fused"):  # 0.1's names of `pairs`, for a release
        with pytest.warns(DeprecationWarning, match=rf"`report.{old}` is now "
                          r"`report.pairs` \(layer paths, not names\)"):
            assert getattr(report, old) == [("m/conv", "m/bn")]


def test_folded_weights_are_rounded_once_from_float64():
    model = keras.Sequential([
        keras.Input((5,)),
        layers.Dense(3, name="dense"),
        layers.BatchNormalization(name="bn", epsilon=1e-3),
    ])
    testing.randomize_batch_norm(model, seed=4)
    dense, bn = model.get_layer("dense"), model.get_layer("bn")
    f64 = lambda v: testing.to_numpy(v).astype(np.float64)  # noqa: E731
    scale = f64(bn.gamma) / np.sqrt(f64(bn.moving_variance) + 1e-3)
    kernel = (f64(dense.kernel) * scale).astype(np.float32)
    bias = (
        (f64(dense.bias) - f64(bn.moving_mean)) * scale + f64(bn.beta)
    ).astype(np.float32)
    folded, _ = fold(model)
    assert np.array_equal(testing.to_numpy(folded.layers[0].kernel), kernel)
    np.testing.assert_array_max_ulp(
        testing.to_numpy(folded.layers[0].bias), bias, maxulp=1
    )
