import os

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing

KERAS_BN_KEYS = set(keras.layers.BatchNormalization().get_config())


def _pair(seed=0, **kwargs):
    """A Keras BN and a frozenbn BN (frozen=False) with the same weights."""
    stock = keras.layers.BatchNormalization(**kwargs)
    ours = frozenbn.BatchNormalization(**kwargs)
    return stock, ours


def _build_same(stock, ours, shape, seed=0):
    """Builds both layers and gives `ours` the weights of `stock`."""
    if not stock.built:
        stock.build(shape)
        testing.randomize_batch_norm(stock, seed)
    ours.build(shape)
    for a, b in zip(stock.weights, ours.weights):
        b.assign(a.value)


def _inputs(shape, seed=1, dtype="float32"):
    rng = np.random.default_rng(seed)
    return (rng.normal(0.7, 2.0, shape)).astype(dtype)


def test_layer_basics():
    layer = frozenbn.BatchNormalization(frozen=True, momentum=0.9)
    out = layer(_inputs((4, 5, 3)))
    assert tuple(out.shape) == (4, 5, 3)
    assert isinstance(layer, keras.layers.BatchNormalization)
    names = ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [w.name for w in layer.weights] == names
    assert [w.path for w in layer.weights] == [f"{layer.name}/{n}" for n in names]
    assert len(layer.trainable_weights) == 2
    assert len(layer.non_trainable_weights) == 2
    config = layer.get_config()
    assert set(config) == KERAS_BN_KEYS | {"frozen", "config_version"}
    assert config["frozen"] is True
    revived = testing.run_serialization_test(layer)
    assert revived.frozen is True


def test_weight_names_match_keras():
    stock, ours = _pair()
    stock.build((None, 3))
    ours.build((None, 3))
    assert [w.name for w in stock.weights] == [w.name for w in ours.weights]


@pytest.mark.parametrize("training", [True, False, None])
@pytest.mark.parametrize(
    "shape,axis",
    [
        ((8, 3), -1),
        ((4, 6, 3), -1),
        ((4, 5, 5, 3), -1),
        ((4, 3, 5, 5), 1),
        ((2, 3, 4, 4, 3), -1),
        ((2, 3, 4, 4, 5), 1),
    ],
)
def test_unfrozen_is_keras_bit_for_bit(shape, axis, training):
    stock, ours = _pair(axis=axis, momentum=0.8)
    _build_same(stock, ours, shape)
    x = _inputs(shape)
    for _ in range(2):  # twice, so the updated statistics are used too
        a = testing.to_numpy(stock(x, training=training))
        b = testing.to_numpy(ours(x, training=training))
        assert np.array_equal(a, b)
    testing.assert_weights_equal(stock, ours)
    if training:
        assert not np.allclose(
            testing.to_numpy(ours.moving_mean), 0.0
        ), "statistics should have moved in training mode"


def test_unfrozen_is_keras_with_mask():
    stock, ours = _pair(momentum=0.5)
    _build_same(stock, ours, (3, 6, 4))
    x = _inputs((3, 6, 4))
    mask = np.array([[1, 1, 1, 0, 0, 0]] * 3, dtype=bool)
    for training in (True, False):
        a = testing.to_numpy(stock(x, training=training, mask=mask))
        b = testing.to_numpy(ours(x, training=training, mask=mask))
        assert np.array_equal(a, b)
    testing.assert_weights_equal(stock, ours)


def test_unfrozen_is_keras_with_renorm():
    kwargs = dict(
        renorm=True,
        renorm_clipping={"rmax": 2.0, "rmin": 0.5, "dmax": 1.0},
        renorm_momentum=0.7,
        momentum=0.6,
    )
    stock, ours = _pair(**kwargs)
    _build_same(stock, ours, (6, 4))
    x = _inputs((6, 4))
    for training in (True, True, False):
        a = testing.to_numpy(stock(x, training=training))
        b = testing.to_numpy(ours(x, training=training))
        assert np.array_equal(a, b)
    testing.assert_weights_equal(stock, ours)
    frozen = frozenbn.BatchNormalization(frozen=True, **kwargs)
    frozen.build((6, 4))
    for a, b in zip(stock.weights, frozen.weights):
        b.assign(a.value)
    before = testing.weights_of(frozen)
    out = frozen(x, training=True)
    assert np.array_equal(testing.to_numpy(out), testing.to_numpy(stock(x)))
    for x0, x1 in zip(before, testing.weights_of(frozen)):
        assert np.array_equal(x0, x1)


@pytest.mark.parametrize("policy", [
    pytest.param("mixed_float16", marks=testing.not_on_backend(
        "torch", "torch has no float16 batch norm kernels on CPU")),
    "mixed_bfloat16",
])
@pytest.mark.parametrize("frozen", [False, True])
def test_mixed_precision_matches_keras(policy, frozen):
    keras.config.set_dtype_policy(policy)
    stock = keras.layers.BatchNormalization(momentum=0.5)
    ours = frozenbn.BatchNormalization(momentum=0.5, frozen=frozen)
    _build_same(stock, ours, (4, 5, 5, 3))
    assert all(w.dtype == "float32" for w in ours.weights)
    x = keras.ops.cast(_inputs((4, 5, 5, 3)), stock.compute_dtype)
    expected = stock(x, training=not frozen)
    got = ours(x, training=True)
    assert keras.backend.standardize_dtype(got.dtype) == stock.compute_dtype
    assert np.array_equal(
        testing.to_numpy(keras.ops.cast(expected, "float32")),
        testing.to_numpy(keras.ops.cast(got, "float32")),
    )
    testing.assert_weights_equal(stock, ours)


@pytest.mark.parametrize("axis,shape", [(-1, (4, 5, 5, 3)), (1, (4, 3, 5, 5))])
def test_frozen_output_equals_keras_inference(axis, shape):
    stock, _ = _pair(axis=axis)
    ours = frozenbn.BatchNormalization(axis=axis, frozen=True)
    _build_same(stock, ours, shape)
    x = _inputs(shape)
    expected = testing.to_numpy(stock(x, training=False))
    for training in (True, False, None):
        got = testing.to_numpy(ours(x, training=training))
        assert np.max(np.abs(got - expected)) <= 1e-6
    testing.assert_weights_equal(stock, ours)  # statistics never moved
    assert np.max(np.abs(expected - testing.to_numpy(stock(x, training=True)))) > 0.1


def test_frozen_statistics_survive_fit_and_gamma_beta_train():
    bn = frozenbn.BatchNormalization(frozen=True)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(6), bn, keras.layers.Dense(1)]
    )
    testing.randomize_batch_norm(model)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = _inputs((64, 6))
    y = x.mean(axis=1, keepdims=True)
    before = {w.name: testing.to_numpy(w).copy() for w in bn.weights}
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    after = {w.name: testing.to_numpy(w) for w in bn.weights}
    assert np.array_equal(before["moving_mean"], after["moving_mean"])
    assert np.array_equal(before["moving_variance"], after["moving_variance"])
    assert np.max(np.abs(before["gamma"] - after["gamma"])) > 1e-4
    assert np.max(np.abs(before["beta"] - after["beta"])) > 1e-4


@testing.requires_tensorflow
def test_frozen_gradients_reach_gamma_beta_and_inputs():
    import tensorflow as tf

    bn = frozenbn.BatchNormalization(frozen=True)
    bn.build((8, 4))
    testing.randomize_batch_norm(bn)
    x = tf.constant(_inputs((8, 4)))
    weights = tf.constant(_inputs((8, 4), seed=5))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(bn(x, training=True) * weights)
    grads = tape.gradient(loss, [bn.gamma.value, bn.beta.value, x])
    for g in grads:
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 1e-3
    # d loss / d beta is the column sum of the upstream gradient.
    np.testing.assert_allclose(grads[1].numpy(), weights.numpy().sum(0), rtol=1e-5)


@pytest.mark.parametrize(
    "shape,axis,kwargs",
    [
        ((4, 5, 5, 6), -1, {}),
        ((4, 6, 5, 5), 1, {}),
        ((8, 6), -1, {"center": False}),
        ((2, 3, 4, 6), -1, {"scale": False}),
    ],
)
@testing.requires_backend(
    "tensorflow", "torch",
    reason="JAX has no native frozen backward (XLA fuses autodiff)")
def test_native_gradient_matches_autodiff(shape, axis, kwargs, monkeypatch):
    """The native backward (TF fused kernel, torch's native batch-norm
    backward): same outputs bit for bit, gradients of the inputs, gamma and
    beta to 1e-6 of autodiff of Keras's op."""
    bn = frozenbn.BatchNormalization(axis=axis, frozen=True, **kwargs)
    bn.build(shape)
    testing.randomize_batch_norm(bn)
    x, upstream = _inputs(shape), _inputs(shape, seed=7)
    assert bn._fused_gradient_layout(x) is not None  # the fast path is taken

    native_y, native_grads = testing.outputs_and_gradients(bn, x, upstream)
    monkeypatch.setattr(frozenbn.BatchNormalization, "_use_fused_gradient", False)
    assert bn._fused_gradient_layout(x) is None
    plain_y, plain_grads = testing.outputs_and_gradients(bn, x, upstream)
    assert np.array_equal(native_y, plain_y)
    assert len(native_grads) == len(plain_grads) == 1 + len(bn.trainable_weights)
    for native, plain in zip(native_grads, plain_grads):
        scale = np.max(np.abs(plain))
        assert scale > 0 and np.max(np.abs(native - plain)) <= 1e-6 * scale


@testing.requires_backend("torch", reason="torch's native backward only")
def test_torch_native_backward_passes_the_saved_statistics_cuda_asserts(monkeypatch):
    """CUDA's `native_batch_norm_backward` asserts that the saved mean and
    inverse std are given even in inference mode ("save_mean should always
    be defined", seen on an H100) and reads them when they are not empty;
    the CPU kernel ignores them. So the frozen backward must pass the moving
    mean and 1/sqrt(variance + epsilon), which this checks on any device."""
    import torch

    aten = torch.ops.aten
    kernel = aten.native_batch_norm_backward
    seen = []

    def like_cuda(dy, x, gamma, mean, var, save_mean, save_invstd, train, eps, mask):
        assert save_mean is not None and save_invstd is not None, "save_mean should always be defined"
        seen.append((mean, var, save_mean, save_invstd, eps))
        return kernel(dy, x, gamma, mean, var, save_mean, save_invstd, train, eps, mask)

    monkeypatch.setattr(aten, "native_batch_norm_backward", like_cuda)
    bn = frozenbn.BatchNormalization(frozen=True, epsilon=1e-3)
    bn.build((4, 3, 3, 5))
    testing.randomize_batch_norm(bn)
    testing.outputs_and_gradients(bn, _inputs((4, 3, 3, 5)), _inputs((4, 3, 3, 5), seed=7))
    assert len(seen) == 1
    mean, var, save_mean, save_invstd, eps = (
        v.detach().cpu().numpy() if hasattr(v, "detach") else v for v in seen[0])
    np.testing.assert_array_equal(save_mean, mean)
    np.testing.assert_allclose(save_invstd, 1 / np.sqrt(var + eps), rtol=1e-6)


@testing.requires_backend("torch", reason="torch's autograd switch only")
def test_torch_inference_without_autograd_takes_the_plain_op(monkeypatch):
    """Under `torch.no_grad()` (Keras's `predict` and `evaluate` on torch)
    a frozen layer computes the plain op, not the `autograd.Function` of the
    native backward, which only costs time there (measured 0.95x stock's
    inference on an H100); with autograd on it takes the native path. The
    outputs are the same bit for bit."""
    import torch

    from frozenbn._backend import native

    frozen_batch_norm = native.frozen_batch_norm
    calls = []

    def counting(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return frozen_batch_norm(*args, **kwargs)

    monkeypatch.setattr(native, "frozen_batch_norm", counting)
    bn = frozenbn.BatchNormalization(frozen=True)
    bn.build((4, 3, 3, 5))
    testing.randomize_batch_norm(bn)
    x = _inputs((4, 3, 3, 5))
    with torch.no_grad():
        plain = testing.to_numpy(bn(x, training=True))
    assert calls == []
    recorded = testing.to_numpy(bn(x, training=True))
    assert calls == [True]
    assert np.array_equal(plain, recorded)
    model = keras.Sequential([keras.Input((3, 3, 5)), bn])
    assert np.array_equal(model.predict(x, verbose=0), recorded)
    assert calls == [True]


def test_trainable_true_on_backbone_does_not_unfreeze():
    backbone = keras.Sequential(
        [keras.Input((4,)), frozenbn.BatchNormalization(frozen=True)]
    )
    backbone.trainable = False
    backbone.trainable = True  # the classic Keras fine-tuning recipe
    bn = backbone.layers[0]
    assert bn.frozen and bn.trainable
    assert len(backbone.trainable_weights) == 2
    x = _inputs((16, 4))
    before = testing.to_numpy(bn.moving_mean).copy()
    backbone(x, training=True)
    assert np.array_equal(before, testing.to_numpy(bn.moving_mean))


def test_frozen_and_not_trainable_has_no_trainable_weights():
    bn = frozenbn.BatchNormalization(frozen=True, trainable=False)
    bn.build((None, 3))
    assert bn.trainable_weights == []
    assert bn.get_config()["trainable"] is False


def test_frozen_attribute_validation():
    with pytest.raises(TypeError, match="frozen.*must be a Python bool"):
        frozenbn.BatchNormalization(frozen="yes")
    bn = frozenbn.BatchNormalization()
    with pytest.raises(TypeError, match=r"Received: frozen=1 of type int\.$"):
        bn.frozen = 1
    # NumPy's bool is named "bool": the message says whose it is.
    with pytest.raises(TypeError, match=r"of type numpy\.bool_?\.$"):
        frozenbn.BatchNormalization(frozen=np.bool_(True))
    with pytest.raises(TypeError, match="wraps a Keras layer"):
        frozenbn.Frozen(lambda x: x)


def test_changing_frozen_takes_effect_after_recompile():
    bn = frozenbn.BatchNormalization(momentum=0.5)
    model = keras.Sequential([keras.Input((3,)), bn, keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = _inputs((64, 3)) + 3.0
    y = np.ones((64, 1), "float32")
    model.fit(x, y, verbose=0)
    moved = testing.to_numpy(bn.moving_mean).copy()
    assert np.max(np.abs(moved)) > 1.0  # unfrozen: statistics track the data
    bn.frozen = True
    model.compile("sgd", "mse")  # documented: recompile after changing it
    model.fit(x + 5.0, y, verbose=0)
    assert np.array_equal(moved, testing.to_numpy(bn.moving_mean))
    bn.frozen = False
    model.compile("sgd", "mse")
    model.fit(x + 5.0, y, verbose=0)
    assert not np.array_equal(moved, testing.to_numpy(bn.moving_mean))


@testing.requires_tensorflow
def test_synchronized_matches_keras():
    stock, ours = _pair(synchronized=True, momentum=0.5)
    _build_same(stock, ours, (4, 3))
    x = _inputs((4, 3))
    for training in (True, False):
        a = testing.to_numpy(stock(x, training=training))
        b = testing.to_numpy(ours(x, training=training))
        assert np.array_equal(a, b)
    frozen = frozenbn.BatchNormalization(synchronized=True, frozen=True)
    _build_same(stock, frozen, (4, 3))
    assert np.array_equal(
        testing.to_numpy(frozen(x, training=True)),
        testing.to_numpy(stock(x, training=False)),
    )


def test_keras_file_round_trip_without_custom_objects(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((5, 5, 3)),
            keras.layers.Conv2D(4, 3),
            frozenbn.BatchNormalization(frozen=True, momentum=0.9),
            frozenbn.Frozen(
                keras.Sequential(
                    [keras.Input((3, 3, 4)), keras.layers.BatchNormalization()]
                )
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    testing.randomize_batch_norm(model)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[1], frozenbn.BatchNormalization)
    assert loaded.layers[1].frozen is True
    assert isinstance(loaded.layers[2], frozenbn.Frozen)
    assert loaded.layers[2].frozen is True
    testing.assert_weights_equal(model, loaded)
    x = _inputs((2, 5, 5, 3))
    assert np.array_equal(
        testing.to_numpy(model(x, training=True)),
        testing.to_numpy(loaded(x, training=True)),
    )
    safe = keras.models.load_model(path, safe_mode=True)
    testing.assert_weights_equal(model, safe)


def test_weights_files_load_both_ways(tmp_path):
    def make(cls):
        return keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3), cls(), keras.layers.Dense(1)]
        )

    stock, ours = make(keras.layers.BatchNormalization), make(
        frozenbn.BatchNormalization
    )
    testing.randomize_batch_norm(stock, seed=1)
    path = os.path.join(tmp_path, "a.weights.h5")
    stock.save_weights(path)
    ours.load_weights(path)
    testing.assert_weights_equal(stock, ours)
    testing.randomize_batch_norm(ours, seed=2)
    ours.save_weights(path)
    stock.load_weights(path)
    testing.assert_weights_equal(stock, ours)


class TrainingProbe(keras.layers.Layer):
    """Records the `training` value it was called with."""

    def call(self, x, training=None):
        self.seen = training
        return x


def test_frozen_wrapper_forces_inference_and_passes_through():
    probe = TrainingProbe()
    wrapper = frozenbn.Frozen(probe)
    x = _inputs((2, 3))
    wrapper(x, training=True)
    assert probe.seen is False
    wrapper.frozen = False
    wrapper(x)
    assert probe.seen is None  # never forced to True (keras-resnet #46)
    wrapper(x, training=True)
    assert probe.seen is True
    wrapper(x, training=False)
    assert probe.seen is False
    assert wrapper.layer is probe


def test_frozen_wrapper_does_not_leak_training_to_siblings():
    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.backbone = frozenbn.Frozen(keras.layers.Dense(3))
            self.after = TrainingProbe()

        def call(self, x):
            return self.after(self.backbone(x))

    model = Model()
    model(_inputs((2, 3)), training=True)
    assert model.after.seen is True


def test_frozen_wrapper_in_fit_uses_inference_but_trains_weights():
    backbone = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(6),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.9),
        ]
    )
    testing.randomize_batch_norm(backbone)
    bn = backbone.layers[1]
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(1)(frozenbn.Frozen(backbone)(inputs))
    model = keras.Model(inputs, outputs)
    assert len(model.trainable_weights) == 6
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = _inputs((64, 6))
    y = x[:, :1]
    stats = testing.to_numpy(bn.moving_mean).copy()
    gamma = testing.to_numpy(bn.gamma).copy()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert np.array_equal(stats, testing.to_numpy(bn.moving_mean))
    assert np.max(np.abs(gamma - testing.to_numpy(bn.gamma))) > 1e-5
    # Dropout is off in the wrapped model: training and inference agree.
    a = testing.to_numpy(model(x, training=True))
    b = testing.to_numpy(model(x, training=False))
    assert np.array_equal(a, b)


def test_frozen_wrapper_serialization():
    wrapper = frozenbn.Frozen(keras.layers.Dense(3), frozen=False, name="w")
    wrapper.build((None, 2))
    revived = testing.run_serialization_test(wrapper)
    assert revived.frozen is False
    assert isinstance(revived.layer, keras.layers.Dense)


def test_training_false_in_a_graph_does_not_hold_in_fit():
    """The Keras guide's `base(x, training=False)` vs `frozenbn.Frozen(base)`.

    Keras 3 hands `fit`'s `training=True` to every layer of a Functional
    graph, whatever `training` the graph recorded: after the guide's
    `base.trainable = True` step, fit updates the base's BN statistics.
    """

    def guide_model(wrap):
        base = keras.Sequential(
            [keras.Input((4, 4, 3)), keras.layers.Conv2D(4, 3),
             keras.layers.BatchNormalization(name="bn")],
            name="base",
        )
        inputs = keras.Input((4, 4, 3))
        features = wrap(base, inputs)
        outputs = keras.layers.Dense(1)(keras.layers.Flatten()(features))
        model = keras.Model(inputs, outputs)
        base.trainable = False  # phase 1 of the guide...
        base.trainable = True  # ...then fine-tune the whole model
        model.compile(keras.optimizers.Adam(1e-5), "mse")
        return model, base.get_layer("bn")

    x = np.random.default_rng(0).normal(3.0, 2.0, (32, 4, 4, 3)).astype("float32")
    y = np.zeros((32, 1), "float32")
    moved = {}
    for name, wrap in {
        "guide": lambda base, inputs: base(inputs, training=False),
        "frozen": lambda base, inputs: frozenbn.Frozen(base)(inputs),
    }.items():
        model, bn = guide_model(wrap)
        before = testing.to_numpy(bn.moving_mean).copy()
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        moved[name] = float(np.abs(testing.to_numpy(bn.moving_mean) - before).max())
    assert moved["guide"] > 1e-3
    assert moved["frozen"] == 0.0
