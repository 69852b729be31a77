"""Tests for `frozenbn.fuse` / `frozenbn.unfuse` (Conv + frozen BN trained
as one layer)."""

import os

import keras
import numpy as np
import pytest
from keras import layers

import frozenbn
from frozenbn.fuse import FusedBatchNorm
from tests import testing

# The DESIGN target: outputs and gradients equal the unfused frozen model's
# within float32 rounding, |a - b| <= 1e-5 * max|a| for each tensor.
RTOL = 1e-5


def _frozen(model, seed=0):
    """`model` with randomized statistics, converted to frozen frozenbn BN."""
    testing.randomize_batch_norm(model, seed)
    rng = np.random.default_rng(seed + 1)
    for weight in model.weights:
        if weight.path.endswith("/bias"):
            weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))
    return frozenbn.convert(model)


def _set_mode(model, mode):
    for layer in frozenbn._keras_private.iter_layers(model):
        if isinstance(layer, FusedBatchNorm):
            layer._mode = mode


def _inputs(shape, seed=2):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _assert_close(expected, got):
    atol = RTOL * max(np.abs(expected).max(), 1e-6)
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def _assert_same_training_math(model, fused, x, training=True):
    """Equal outputs, and equal gradients of the inputs and of each
    trainable weight (matched by path: same variables, same names)."""
    paths = [w.path for w in model.trainable_weights]
    fused_paths = [w.path for w in fused.trainable_weights]
    assert sorted(fused_paths) == sorted(paths)
    assert len(set(paths)) == len(paths)
    upstream = _inputs(tuple(model.compute_output_shape(x.shape)), seed=9)
    y, grads = testing.outputs_and_gradients(model, x, upstream, training)
    fused_y, fused_grads = testing.outputs_and_gradients(
        fused, x, upstream, training
    )
    _assert_close(y, fused_y)
    _assert_close(grads[0], fused_grads[0])  # the inputs'
    by_path = dict(zip(fused_paths, fused_grads[1:]))
    for path, expected in zip(paths, grads[1:]):
        assert np.abs(expected).max() > 0, path
        _assert_close(expected, by_path[path])


def test_sequential_conv_bn_relu():
    model = _frozen(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                layers.Conv2D(4, 3, name="conv"),
                layers.BatchNormalization(name="bn"),
                layers.ReLU(name="relu"),
            ]
        )
    )
    before = testing.weights_of(model)

    fused, report = frozenbn.fuse(model)

    assert report.pairs == [testing.paths_in(model, "conv", "bn")]
    assert report.left == []
    assert str(report).startswith("Fused 1 BatchNormalization layer(s)")
    assert [type(layer).__name__ for layer in fused.layers] == [
        "FusedBatchNorm",
        "ReLU",
    ]
    fused_layer = fused.layers[0]
    assert fused_layer.layer.name == "conv"
    assert fused_layer.batch_norm.name == "bn"
    assert [w.name for w in fused.trainable_weights] == [
        "kernel",
        "bias",
        "gamma",
        "beta",
    ]
    # Separate variables of the copy, not the original's.
    assert fused_layer.layer.kernel is not model.layers[0].kernel
    _set_mode(fused, "kernel")
    _assert_same_training_math(model, fused, _inputs((2, 8, 8, 3)))
    for a, b in zip(before, testing.weights_of(model)):
        assert np.array_equal(a, b)  # the input model is untouched




@pytest.mark.parametrize("case", sorted(testing.LINEAR_LAYERS))
@pytest.mark.parametrize("use_bias", [False, True])
def test_each_layer_type_trains_like_unfused(case, use_bias):
    shape, make = testing.LINEAR_LAYERS[case]
    layer = make()
    layer.use_bias = use_bias
    channels_first = getattr(layer, "data_format", None) == "channels_first"
    bn = layers.BatchNormalization(axis=1 if channels_first else -1)
    inputs = keras.Input(shape)
    model = _frozen(
        keras.Model(inputs, layers.Activation("tanh")(bn(layer(inputs))))
    )

    fused, report = frozenbn.fuse(model)

    assert report.pairs == [testing.paths_in(model, layer.name, bn.name)], report
    assert frozenbn._walk.batch_norm_layers(fused)[0].frozen
    _set_mode(fused, "kernel")  # the fused formula, whatever the sizes
    _assert_same_training_math(model, fused, _inputs((3,) + shape))
    # Inference mode computes the same too.
    x = _inputs((3,) + shape, seed=4)
    _assert_close(
        testing.to_numpy(model(x, training=False)),
        testing.to_numpy(fused(x, training=False)),
    )


@pytest.mark.parametrize(
    "center, scale", [(False, True), (True, False), (False, False)]
)
def test_bn_without_gamma_or_beta(center, scale):
    model = _frozen(
        keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                layers.Conv2D(3, 3),
                layers.BatchNormalization(center=center, scale=scale),
            ]
        )
    )
    fused, report = frozenbn.fuse(model)
    assert len(report.pairs) == 1
    _set_mode(fused, "kernel")
    _assert_same_training_math(model, fused, _inputs((2, 6, 6, 2)))


def test_auto_mode_picks_the_cheaper_side():
    # A kernel larger than the layer's output is cheaper to leave alone:
    # the layer then runs conv and BN in turn (the same numbers).
    inputs = keras.Input((4, 4, 64))
    big = layers.Conv2D(64, 3, padding="same", name="big")(inputs)
    h = layers.BatchNormalization(name="bn_big")(big)
    small = layers.Conv2D(2, 1, name="small")(h)
    h = layers.BatchNormalization(name="bn_small")(small)
    model = _frozen(keras.Model(inputs, h))
    fused, report = frozenbn.fuse(model)
    assert len(report.pairs) == 2
    by_name = {layer.layer.name: layer for layer in fused.layers[1:]}
    x = _inputs((8, 4, 4, 64))
    # 3*3*64*64 kernel values > 8*4*4*64 outputs; 64*2 < 8*4*4*2.
    assert not by_name["big"]._scales_kernel(x)
    assert by_name["small"]._scales_kernel(x)
    _assert_same_training_math(model, fused, x)


def test_pairs_that_are_left_say_why():
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, padding="same", name="c_keras")(inputs)
    h = layers.BatchNormalization(name="keras_bn")(h)
    h = layers.Conv2D(4, 3, padding="same", name="c_unfrozen")(h)
    h = frozenbn.BatchNormalization(frozen=False, name="unfrozen_bn")(h)
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="c_relu")(
        h
    )
    h = frozenbn.BatchNormalization(frozen=True, name="relu_bn")(h)
    h = layers.Conv2D(
        4,
        3,
        padding="same",
        activity_regularizer="l2",
        name="c_reg",
    )(h)
    h = frozenbn.BatchNormalization(frozen=True, name="reg_bn")(h)
    out = layers.Conv2D(4, 1, name="c_out")(h)
    h = frozenbn.BatchNormalization(frozen=True, name="out_bn")(out)
    model = keras.Model(inputs, [h, out])
    testing.randomize_batch_norm(model)

    with pytest.warns(UserWarning, match=r"^frozenbn.fuse changed nothing: "
                      r"none of its 5 BatchNormalization layer\(s\) qualifies "
                      rf"\('{model.name}/keras_bn': a Keras BatchNormalization"):
        fused, report = frozenbn.fuse(model)

    reasons = testing.by_name(model, report.left)
    assert report.pairs == []
    assert "convert(model)" in reasons["keras_bn"]
    assert "frozen=False" in reasons["unfrozen_bn"]
    assert "activation 'relu'" in reasons["relu_bn"]
    assert "activity regularizer" in reasons["reg_bn"]
    assert "also a model output" in reasons["out_bn"]
    x = _inputs((2, 8, 8, 3))
    for a, b in zip(model(x, training=False), fused(x, training=False)):
        _assert_close(testing.to_numpy(a), testing.to_numpy(b))


def test_fit_trains_the_same_variables_and_never_the_statistics():
    model = _frozen(
        keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                layers.Conv2D(4, 3, name="conv"),
                layers.BatchNormalization(name="bn"),
                layers.ReLU(),
                layers.Conv2D(4, 3, name="frozen_conv", trainable=False),
                layers.BatchNormalization(name="frozen_bn", trainable=False),
                layers.Flatten(),
                layers.Dense(2, name="head"),
            ]
        )
    )
    fused, report = frozenbn.fuse(model)
    assert len(report.pairs) == 2
    _set_mode(fused, "kernel")
    assert [w.path for w in fused.non_trainable_weights] == [
        w.path for w in model.non_trainable_weights
    ]
    x, y = _inputs((8, 6, 6, 3)), _inputs((8, 2), seed=3)
    statistics = [
        testing.to_numpy(w) for w in fused.weights if "moving" in w.path
    ]
    for m in (model, fused):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        m.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(model.weights, fused.weights):
        assert a.path == b.path
        _assert_close(testing.to_numpy(a), testing.to_numpy(b))
    for before, w in zip(
        statistics, [w for w in fused.weights if "moving" in w.path]
    ):
        assert np.array_equal(before, testing.to_numpy(w))
    frozen_conv = fused.layers[2].layer
    assert frozen_conv.name == "frozen_conv" and not frozen_conv.trainable


def test_unfreezing_a_fused_bn_runs_the_two_layers():
    model = _frozen(
        keras.Sequential(
            [keras.Input((5, 5, 2)), layers.Conv2D(3, 3), layers.BatchNormalization()]
        )
    )
    fused, _ = frozenbn.fuse(model)
    assert frozenbn.unfreeze(fused) == 1
    frozenbn.unfreeze(model)
    x = _inputs((4, 5, 5, 2))
    _assert_close(
        testing.to_numpy(model(x, training=True)),
        testing.to_numpy(fused(x, training=True)),
    )


def test_unfuse_gives_back_the_trained_layers(tmp_path):
    inputs = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, name="conv")(inputs)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.GlobalAveragePooling2D()(layers.ReLU()(h))
    model = _frozen(
        keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.Model(inputs, h, name="backbone"),
                layers.Dense(3, name="head"),
                layers.BatchNormalization(name="head_bn"),
            ]
        )
    )
    fused, report = frozenbn.fuse(model)
    root = model.name
    assert sorted(report.pairs) == [
        (f"{root}/backbone/conv", f"{root}/backbone/bn"),
        (f"{root}/head", f"{root}/head_bn")]
    for weight in fused.trainable_weights:  # "training"
        weight.assign(weight + 0.25)

    unfused, unfuse_report = frozenbn.unfuse(fused)

    # The paths of the split layers, in the copy (named as `model`).
    assert sorted(unfuse_report.pairs) == sorted(report.pairs)
    assert unfuse_report.left == [] and str(unfuse_report).startswith(
        "Unfused 2 BatchNormalization layer(s), left 0.")
    assert [layer.name for layer in unfused.layers] == [
        "backbone",
        "head",
        "head_bn",
    ]
    assert "conv" in [layer.name for layer in unfused.layers[0].layers]
    assert not any(
        isinstance(layer, FusedBatchNorm)
        for layer in frozenbn._keras_private.iter_layers(unfused)
    )
    for a, b in zip(fused.weights, unfused.weights):
        assert a.path == b.path and a.trainable == b.trainable
        assert np.array_equal(testing.to_numpy(a), testing.to_numpy(b))
    x = _inputs((2, 8, 8, 3))
    expected = testing.to_numpy(fused(x, training=False))
    _assert_close(expected, testing.to_numpy(unfused(x, training=False)))
    folded, fold_report = frozenbn.fold(unfused)
    assert len(fold_report.pairs) == 2
    _assert_close(expected, testing.to_numpy(folded(x, training=False)))
    # fold on the fused model itself says what to do.
    _, fold_report = frozenbn.fold(fused)
    assert "frozenbn.unfuse" in dict(fold_report.left)[
        f"{fused.name}/backbone/conv_fused/bn"]


def test_models_wrapped_in_frozen_are_fused_and_unfused():
    inputs = keras.Input((8, 8, 3))
    h = layers.BatchNormalization(name="bn")(layers.Conv2D(4, 3, name="conv")(
        inputs))
    backbone = keras.Model(inputs, layers.ReLU()(h), name="backbone")
    model = _frozen(keras.Sequential([
        keras.Input((8, 8, 3)), frozenbn.Frozen(backbone, name="wrapper"),
        layers.GlobalAveragePooling2D(), layers.Dense(3, name="head")]))

    fused, report = frozenbn.fuse(model)

    pair = (f"{model.name}/wrapper/backbone/conv",
            f"{model.name}/wrapper/backbone/bn")
    assert report.pairs == [pair] and report.left == []
    assert isinstance(fused.get_layer("wrapper"), frozenbn.Frozen)
    _assert_same_training_math(model, fused, _inputs((2, 8, 8, 3)))
    unfused, unfuse_report = frozenbn.unfuse(fused)
    assert unfuse_report.pairs == [pair]
    assert isinstance(unfused.get_layer("wrapper"), frozenbn.Frozen)
    _assert_same_training_math(model, unfused, _inputs((2, 8, 8, 3)))


def test_fused_model_saves_and_loads(tmp_path):
    model = _frozen(
        keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                layers.SeparableConv2D(4, 3, name="sep"),
                layers.BatchNormalization(name="bn"),
                layers.Flatten(),
                layers.Dense(2, name="head"),
                layers.BatchNormalization(name="head_bn"),
            ]
        )
    )
    fused, _ = frozenbn.fuse(model)
    path = os.path.join(tmp_path, "fused.keras")
    fused.save(path)

    loaded = keras.models.load_model(path)

    assert [type(layer).__name__ for layer in loaded.layers] == [
        "FusedBatchNorm",
        "Flatten",
        "FusedBatchNorm",
    ]
    assert loaded.layers[0].batch_norm.frozen
    for a, b in zip(fused.weights, loaded.weights):
        assert a.name == b.name and a.trainable == b.trainable
        assert np.array_equal(testing.to_numpy(a), testing.to_numpy(b))
    x = _inputs((2, 6, 6, 3))
    assert np.array_equal(
        testing.to_numpy(fused(x)), testing.to_numpy(loaded(x))
    )
    testing.run_serialization_test(fused.layers[0])


@pytest.mark.parametrize(
    "name, count",
    [("ResNet50", 53), ("MobileNetV3Small", 34)],
)
def test_applications_in_a_sequential_head(name, count):
    # MobileNetV3 also has bare operations in its graph (`x + 3.0`).
    with frozenbn.patch(frozen=True):
        backbone = getattr(keras.applications, name)(
            weights=None,
            include_top=False,
            input_shape=(32, 32, 3),
            pooling="avg",
        )
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), backbone, layers.Dense(3, name="head")]
    )
    testing.randomize_batch_norm(model, seed=5)

    fused, report = frozenbn.fuse(model)

    assert len(report.pairs) == count and report.left == []
    assert frozenbn._walk.batch_norm_layers(fused)  # held by FusedBatchNorm
    assert fused.layers[0] is not backbone
    x = np.random.default_rng(6).uniform(0, 1, (2, 32, 32, 3)).astype(
        "float32"
    )
    _set_mode(fused, "kernel")
    _assert_same_training_math(model, fused, x)


def test_mixed_precision_computes_in_the_compute_dtype():
    keras.config.set_dtype_policy("mixed_float16")
    model = _frozen(
        keras.Sequential(
            [keras.Input((6, 6, 3)), layers.Conv2D(4, 3), layers.BatchNormalization()]
        )
    )
    fused, _ = frozenbn.fuse(model)
    _set_mode(fused, "kernel")
    x = _inputs((2, 6, 6, 3))
    expected = testing.to_numpy(model(x, training=True)).astype("float32")
    got = fused(x, training=True)
    assert keras.backend.standardize_dtype(got.dtype) == "float16"
    # float16 rounding of the scaled kernel and the output.
    np.testing.assert_allclose(
        testing.to_numpy(got).astype("float32"),
        expected,
        rtol=0,
        atol=5e-3 * np.abs(expected).max(),
    )


def test_rejects_subclassed_unbuilt_and_non_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 1)
            self.bn = frozenbn.BatchNormalization(frozen=True)

        def call(self, x):
            return self.bn(self.conv(x))

    net = Net()
    net(np.ones((1, 4, 4, 1), "float32"))
    for function in (frozenbn.fuse, frozenbn.unfuse):
        with pytest.raises(TypeError, match="Functional"):
            function(net)
        with pytest.raises(ValueError, match="not built"):
            function(
                keras.Sequential(
                    [layers.Dense(2), frozenbn.BatchNormalization()]
                )
            )
        with pytest.raises(TypeError, match=function.__name__):
            function("model.keras")


def test_fused_layer_rejects_what_it_cannot_fuse():
    with pytest.raises(TypeError, match="Conv or Dense"):
        FusedBatchNorm(layers.ReLU(), frozenbn.BatchNormalization())
    with pytest.raises(TypeError, match="frozenbn.BatchNormalization"):
        FusedBatchNorm(layers.Dense(2), layers.BatchNormalization())


def test_copies_keep_variable_paths_with_repeated_scope_names():
    # A model nested in an enclosing model of the same name creates paths
    # such as "model/model/conv/kernel"; the fused copy keeps them.
    from frozenbn import _graph

    with keras.name_scope("model"):
        with keras.name_scope("model", deduplicate=False):
            conv = layers.Conv2D(3, 1, name="conv")
            conv.build((None, 4, 4, 2))
    copy = _graph.copy_built(conv)
    assert [w.path for w in copy.weights] == [
        "model/model/conv/kernel",
        "model/model/conv/bias",
    ]
    for a, b in zip(conv.weights, copy.weights):
        assert np.array_equal(testing.to_numpy(a), testing.to_numpy(b))
