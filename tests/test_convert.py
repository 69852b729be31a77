import os

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing

# Under `pytest -n N` one worker runs the whole module
# (`testing.SHARED_WORKER_MODULES`), so its module fixtures are built once.


def _resnet(**kwargs):
    model = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(32, 32, 3), **kwargs
    )
    return testing.randomize_batch_norm(model)


def _classes(model):
    return [type(layer) for layer in model._flatten_layers()]


def _images(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (n, size, size, 3)).astype("float32")


def _bn_layers(model, cls=keras.layers.BatchNormalization):
    return [l for l in model._flatten_layers() if isinstance(l, cls)]


@pytest.fixture(scope="module")
def resnet():
    return _resnet()


def test_convert_resnet50_is_bit_exact_and_leaves_original(resnet):
    classes = _classes(resnet)
    before = testing.weights_of(resnet)
    converted = frozenbn.convert(resnet)
    assert converted is not resnet
    assert _classes(resnet) == classes  # the input is untouched
    ours = _bn_layers(converted, frozenbn.BatchNormalization)
    assert len(ours) == 53 and all(layer.frozen for layer in ours)
    assert not set(map(id, converted._flatten_layers())) & set(
        map(id, resnet._flatten_layers())
    )
    testing.assert_weights_equal(resnet, converted)
    for a, b in zip(before, testing.weights_of(resnet)):
        assert np.array_equal(a, b)
    x = _images()
    original = testing.to_numpy(resnet(x, training=False))
    inference = testing.to_numpy(converted(x, training=False))
    training = testing.to_numpy(converted(x, training=True))
    assert np.array_equal(original, inference)
    assert np.max(np.abs(training - inference)) <= 1e-6
    # ...while the stock model disagrees with itself by a lot.
    assert np.max(np.abs(testing.to_numpy(resnet(x, training=True)) - original)) > 1


def test_fit_keeps_statistics_and_trains_gamma_beta(resnet):
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            resnet,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    converted = frozenbn.convert(model)
    converted.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    bns = _bn_layers(converted, frozenbn.BatchNormalization)
    assert len(bns) == 53
    before = [
        [testing.to_numpy(w).copy() for w in layer.weights] for layer in bns
    ]
    x = _images(32, seed=1)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("float32")
    converted.fit(x, y, batch_size=16, epochs=1, verbose=0)
    moved_gamma = moved_beta = 0
    for layer, (gamma, beta, mean, var) in zip(bns, before):
        assert np.array_equal(mean, testing.to_numpy(layer.moving_mean))
        assert np.array_equal(var, testing.to_numpy(layer.moving_variance))
        moved_gamma += not np.array_equal(gamma, testing.to_numpy(layer.gamma))
        moved_beta += not np.array_equal(beta, testing.to_numpy(layer.beta))
    assert moved_gamma == 53 and moved_beta == 53


def test_gradients_reach_every_gamma_and_beta(resnet):
    converted = frozenbn.convert(resnet)
    bns = _bn_layers(converted, frozenbn.BatchNormalization)
    affine = {id(v) for layer in bns for v in (layer.gamma, layer.beta)}
    x = _images(2)
    upstream = np.random.default_rng(3).normal(
        size=testing.to_numpy(converted(x)).shape
    ).astype("float32")
    _, grads = testing.outputs_and_gradients(converted, x, upstream)
    norms = [
        float(np.abs(g).max())
        for w, g in zip(converted.trainable_weights, grads[1:])
        if id(w) in affine
    ]
    assert len(norms) == 106 and min(norms) > 0.0


def test_training_the_copy_leaves_the_original_intact():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()]
    )
    testing.randomize_batch_norm(model)
    before = testing.weights_of(model)
    converted = frozenbn.convert(model, frozen=False)
    converted.compile(keras.optimizers.SGD(0.1), "mse")
    x = _images(32)[:, 0, 0, :].repeat(2, axis=1)[:, :4]
    converted.fit(x, x, epochs=2, verbose=0)
    # On JAX a shared buffer would be donated (deleted) by `fit`.
    for a, b in zip(before, testing.weights_of(model)):
        assert np.array_equal(a, b)
    assert not np.array_equal(before[0], testing.weights_of(converted)[0])


def test_nested_model_shared_layers_multi_io():
    shared_bn = keras.layers.BatchNormalization(name="shared_bn")
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8), keras.layers.BatchNormalization()],
        name="inner",
    )
    a, b = keras.Input((8,), name="a"), keras.Input((8,), name="b")
    ya, yb = shared_bn(inner(a)), shared_bn(b)
    model = keras.Model([a, b], [keras.layers.Dense(2)(ya), keras.layers.Add()([ya, yb])])
    testing.randomize_batch_norm(model)
    converted = frozenbn.convert(model, frozen=False)
    assert len(_bn_layers(converted, frozenbn.BatchNormalization)) == 2
    new_shared = converted.get_layer("shared_bn")
    assert isinstance(new_shared, frozenbn.BatchNormalization)
    assert len(new_shared._inbound_nodes) == 2  # still one layer, used twice
    testing.assert_weights_equal(model, converted)
    x = [_images(4)[:, 0, 0, :].repeat(3, axis=1)[:, :8]] * 2
    for training in (False, True):
        for o, c in zip(model(x, training=training), converted(x, training=training)):
            assert np.array_equal(testing.to_numpy(o), testing.to_numpy(c))


def test_include_selects_layers(resnet):
    converted = frozenbn.convert(
        resnet, include=lambda layer: layer.name.startswith("conv5")
    )
    ours = _bn_layers(converted, frozenbn.BatchNormalization)
    assert len(ours) == 10
    assert all(layer.name.startswith("conv5") for layer in ours)
    assert len(_bn_layers(converted)) == 53


def test_convert_says_when_it_changes_nothing():
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match=r"^frozenbn.convert changed nothing: "
                      r"it has no BatchNormalization layer. The result is a "
                      r"plain copy.$"):
        copy = frozenbn.convert(dense)
    assert copy is not dense and len(copy.layers) == 1
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.BatchNormalization()])
    with pytest.warns(UserWarning, match=r"`include` selects none of its 1 "
                      r"BatchNormalization layer\(s\). The result is the "
                      r"model as it was.$"):
        assert frozenbn.convert(model, include=lambda layer: False,
                                inplace=True) is model
    assert type(model.layers[0]) is keras.layers.BatchNormalization


def test_idempotent_and_flag_applied(resnet):
    once = frozenbn.convert(resnet)
    with pytest.warns(UserWarning, match=r"changed nothing: its 53 selected "
                      r"BatchNormalization layer\(s\) were frozenbn's"):
        twice = frozenbn.convert(once)
    assert _classes(once) == _classes(twice)
    testing.assert_weights_equal(once, twice)
    x = _images(2)
    assert np.array_equal(
        testing.to_numpy(once(x, training=True)),
        testing.to_numpy(twice(x, training=True)),
    )
    unfrozen = frozenbn.convert(once, frozen=False)
    assert not any(l.frozen for l in _bn_layers(unfrozen, frozenbn.BatchNormalization))
    assert all(l.frozen for l in _bn_layers(once, frozenbn.BatchNormalization))


def test_trainable_flags_and_compile_are_kept():
    backbone = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()],
        name="backbone",
    )
    backbone.trainable = False
    model = keras.Sequential([keras.Input((4,)), backbone, keras.layers.Dense(1)])
    model.compile("adam", "mse")
    converted = frozenbn.convert(model)
    assert converted.compiled
    assert [l.trainable for l in converted._flatten_layers()] == [
        l.trainable for l in model._flatten_layers()
    ]
    assert [w.path for w in converted.trainable_weights] == [
        w.path for w in model.trainable_weights
    ]


def test_loaded_from_keras_file_and_saved_again(tmp_path, resnet):
    path = os.path.join(tmp_path, "stock.keras")
    resnet.save(path)
    loaded = keras.models.load_model(path)
    converted = frozenbn.convert(loaded)
    out = os.path.join(tmp_path, "frozen.keras")
    converted.save(out)
    reloaded = keras.models.load_model(out)
    ours = _bn_layers(reloaded, frozenbn.BatchNormalization)
    assert len(ours) == 53 and all(layer.frozen for layer in ours)
    testing.assert_weights_equal(resnet, reloaded)
    x = _images(2)
    assert np.array_equal(
        testing.to_numpy(resnet(x, training=False)),
        testing.to_numpy(reloaded(x, training=True)),
    )


@pytest.mark.parametrize(
    "name,count",
    [
        ("ResNet50V2", 49),
        # The model sweep converts one model of each of these families on
        # every push; these larger ones run in the full tier.
        pytest.param("MobileNetV2", 52, marks=pytest.mark.full),
        pytest.param("EfficientNetB0", 49, marks=pytest.mark.full),
        pytest.param("DenseNet121", 121, marks=pytest.mark.full),
    ],
)
def test_keras_applications(name, count):
    model = getattr(keras.applications, name)(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    testing.randomize_batch_norm(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            # EfficientNet's stochastic depth: off, so that only BN could
            # make training and inference differ.
            layer.rate = 0.0
    converted = frozenbn.convert(model)
    assert len(_bn_layers(converted, frozenbn.BatchNormalization)) == count
    assert len(_bn_layers(model, frozenbn.BatchNormalization)) == 0
    testing.assert_weights_equal(model, converted)
    x = _images(2) * 50 + 120  # pixel-like values for the models' rescaling
    expected = testing.to_numpy(model(x, training=False))
    assert np.array_equal(expected, testing.to_numpy(converted(x, training=False)))
    assert np.max(np.abs(testing.to_numpy(converted(x, training=True)) - expected)) <= 1e-6


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn(self.dense(x))


def test_inplace_converts_subclassed_models():
    model = _Subclassed()
    x = _images(8)[:, 0, 0, :]
    model(x)
    testing.randomize_batch_norm(model)
    expected = testing.to_numpy(model(x, training=False))
    with pytest.raises(TypeError, match=r"inplace=True"):
        frozenbn.convert(model)
    assert type(model.bn) is keras.layers.BatchNormalization  # untouched
    result = frozenbn.convert(model, inplace=True)
    assert result is model
    assert isinstance(model.bn, frozenbn.BatchNormalization) and model.bn.frozen
    assert np.array_equal(expected, testing.to_numpy(model(x, training=True)))


def test_inplace_on_functional_keeps_objects(resnet):
    model = keras.models.clone_model(resnet)
    bn_ids = [id(l) for l in _bn_layers(model)]
    assert frozenbn.convert(model, inplace=True) is model
    ours = _bn_layers(model, frozenbn.BatchNormalization)
    assert [id(l) for l in ours] == bn_ids


def test_errors_say_what_to_do():
    with pytest.raises(TypeError, match="expects a Keras model.*load_model"):
        frozenbn.convert("model.keras")
    with pytest.raises(TypeError, match="expects a Keras model"):
        frozenbn.freeze(np.zeros(3))
    unbuilt = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="not built.*Build it first"):
        frozenbn.convert(unbuilt)
    with pytest.raises(TypeError, match="must be a Python bool"):
        frozenbn.convert(_resnet_small(), frozen="yes")

    class MyBN(keras.layers.BatchNormalization):
        pass

    model = keras.Sequential([keras.Input((3,)), MyBN(name="mine"), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=r"custom BatchNormalization subclass.*include="):
        frozenbn.convert(model)
    with pytest.raises(ValueError, match="MyBN"):
        frozenbn.convert(model, inplace=True)
    assert type(model.layers[1]) is keras.layers.BatchNormalization  # no change
    converted = frozenbn.convert(model, include=lambda layer: layer.name != "mine")
    assert type(converted.layers[0]) is MyBN
    assert type(converted.layers[1]) is frozenbn.BatchNormalization


def _resnet_small():
    return keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])


def test_freeze_and_unfreeze_count_changes():
    wrapped = frozenbn.Frozen(_resnet_small(), frozen=False)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            frozenbn.BatchNormalization(frozen=True),
            frozenbn.BatchNormalization(),
            keras.layers.BatchNormalization(),
            wrapped,
        ]
    )
    assert frozenbn.freeze(model) == 2
    with pytest.warns(UserWarning, match=r"^frozenbn.freeze changed nothing: "
                      r"its 3 selected layer\(s\) already had frozen=True\.$"):
        assert frozenbn.freeze(model) == 0
    with pytest.warns(UserWarning, match=r"^frozenbn.unfreeze changed nothing: "
                      r"`include` selects none of its 2 frozenbn layer\(s\)\.$"):
        assert frozenbn.unfreeze(model, include=lambda layer: False) == 0
    with pytest.warns(UserWarning, match=r"no BatchNormalization layer"):
        assert frozenbn.freeze(keras.layers.Dense(2)) == 0
    assert wrapped.frozen
    assert frozenbn.unfreeze(model) == 3
    assert frozenbn.freeze(model, include=lambda l: isinstance(l, frozenbn.Frozen)) == 1
    assert type(model.layers[2]) is keras.layers.BatchNormalization


@keras.saving.register_keras_serializable(package="frozenbn_tests")
class _TwoDense(keras.layers.Layer):
    """A custom layer whose own weights share names ("kernel", "bias")."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.first = keras.layers.Dense(units)
        self.second = keras.layers.Dense(units)

    def build(self, input_shape):
        self.first.build(input_shape)
        self.second.build((*input_shape[:-1], self.units))

    def call(self, x):
        return self.second(self.first(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_copy_is_exact_when_weights_cannot_be_seeded_by_name():
    inputs = keras.Input((4,))
    x = _TwoDense(name="two")(inputs)
    outputs = keras.layers.BatchNormalization()(x)
    model = testing.randomize_batch_norm(keras.Model(inputs, outputs))
    converted = frozenbn.convert(model)
    testing.assert_weights_equal(model, converted)
    x = _images(4)[:, 0, 0, :].repeat(2, axis=1)[:, :4]
    assert np.array_equal(
        testing.to_numpy(model(x, training=False)),
        testing.to_numpy(converted(x, training=True)),
    )
    assert not any("add_weight" in vars(l) for l in converted._flatten_layers())


def test_a_copy_that_lost_a_layer_is_named_by_its_path():
    from frozenbn import _clone
    from frozenbn import _walk

    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="d")], name="inner"
    )
    model = keras.Sequential([keras.Input((3,)), inner], name="outer")
    copy = keras.models.clone_model(model)
    pairs, tree = _walk.match(model, copy), _walk.Tree(model)
    assert _clone._structure_mismatch(tree, pairs) == ""
    del pairs[id(inner.get_layer("d"))]
    assert _clone._structure_mismatch(tree, pairs) == (
        "layer 'outer/inner/d' has no counterpart in the copy"
    )


def test_convert_walks_the_model_once(monkeypatch, resnet):
    # The plan (`_walk.Tree`) is the one walk that checking, copying and
    # swapping share; `match` then pairs the model with its copy level by
    # level, and paths are computed only for a message.
    from frozenbn import _keras_private
    from frozenbn import _walk

    roots, path_walks = [], []
    iter_layers, paths = _keras_private.iter_layers, _walk.paths
    monkeypatch.setattr(_keras_private, "iter_layers",
                        lambda root: roots.append(root) or iter_layers(root))
    monkeypatch.setattr(_walk, "paths",
                        lambda root: path_walks.append(root) or paths(root))
    converted = frozenbn.convert(resnet)
    assert [root is resnet for root in roots] == [True]
    assert path_walks == []
    assert sum(isinstance(layer, frozenbn.BatchNormalization)
               for layer in converted.layers) == sum(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in resnet.layers) > 0
