"""Tests for `frozenbn.recalibrate` (precise BN) and its data/math helpers."""

import logging

import numpy as np
import pytest

import keras
from keras import ops

import frozenbn
from frozenbn import _data
from frozenbn import _math
from frozenbn.recalibrate import recalibrate
from tests import testing

RTOL = 1e-5  # the DESIGN target: numpy population statistics within 1e-5


def _np(x):
    return ops.convert_to_numpy(x)


def _stats(layer):
    return _np(layer.moving_mean), _np(layer.moving_variance)


def _assert_population(layer, values, axis=-1):
    """`layer`'s moving statistics are the population stats of `values`."""
    values = np.asarray(values, np.float64)
    axes = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
    mean, var = _stats(layer)
    np.testing.assert_allclose(mean, values.mean(axes), rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(var, values.var(axes), rtol=RTOL)


def _weights_by_path(model):
    return {w.path: _np(w).copy() for w in model.weights}


# The math --------------------------------------------------------------


def test_pooled_moments_equal_numpy_over_unequal_batches():
    # About a reference value near the data, as the statistics pass does.
    rng = np.random.default_rng(0)
    data = rng.normal(1e3, 0.5, (101, 4))
    shifted = data - 1e3
    state = (0.0, np.zeros(4, "float32"), np.zeros(4, "float32"))
    for chunk in np.split(shifted, [40, 90, 100]):
        state = _math.pool_moments(state, chunk.mean(0), chunk.var(0),
                                   len(chunk))
    # An empty batch (NaN moments, count 0) changes nothing.
    state = _math.pool_moments(state, np.full(4, np.nan), np.full(4, np.nan), 0)
    pooled = _math.PooledMoments.from_state(*(_np(t) for t in state))
    np.testing.assert_allclose(pooled.mean + 1e3, data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(pooled.variance, data.var(0), rtol=1e-5)
    assert pooled.count == 101


def test_scale_and_shift_defaults_and_values():
    def rsqrt(v):
        return 1.0 / np.sqrt(v)

    scale, shift = _math.scale_and_shift(
        np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([3.0]),
        1.0, np.array([5.0]), rsqrt,
    )
    np.testing.assert_allclose(scale, [1.0])  # 2 / sqrt(3 + 1)
    np.testing.assert_allclose(shift, [3.0])  # (5 - 3) * 1 + 1
    scale, shift = _math.scale_and_shift(
        None, None, np.array([0.5]), np.array([0.0]), 0.25, None, rsqrt
    )
    np.testing.assert_allclose(scale, [2.0])
    np.testing.assert_allclose(shift, [-1.0])


def test_batch_moments_masked_counts_unmasked_positions():
    x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    mean, var, count = _math.batch_moments(x, -1, mask)
    kept = x[mask]
    assert float(_np(count)) == 3
    np.testing.assert_allclose(_np(mean), kept.mean(0), rtol=1e-6)
    np.testing.assert_allclose(_np(var), kept.var(0), rtol=1e-6)


# Data handling ---------------------------------------------------------


def test_iter_batches_forms_and_counts():
    x = np.arange(70, dtype="float32").reshape(35, 2)
    y = np.zeros(35)
    sizes = lambda data, **kw: [len(b) for b in _data.iter_batches(data, **kw)]
    assert sizes(x, batch_size=16) == [16, 16, 3]
    assert sizes((x, y), batch_size=16) == [16, 16, 3]
    assert sizes((x, y, y), batch_size=16, steps=2) == [16, 16]
    assert _data.count_steps(x, batch_size=16) == 3
    assert _data.count_steps(x, steps=2, batch_size=16) == 2
    assert _data.count_steps(iter([x])) is None
    multi = list(_data.iter_batches([x, x], batch_size=20))
    assert [type(b) for b in multi] == [list, list]
    gen = ((x[i : i + 5], y[i : i + 5]) for i in range(0, 35, 5))
    assert sizes(gen) == [5] * 7


@pytest.mark.parametrize(
    "data, error",
    [
        (None, TypeError),
        ("images/", TypeError),
        (3, TypeError),
        (np.zeros((0, 3)), ValueError),
        ([np.zeros((3, 1)), np.zeros((4, 1))], ValueError),
        (iter([]), ValueError),
        ((np.zeros((3, 1)),) * 4, ValueError),
    ],
)
def test_iter_batches_rejects_bad_data(data, error):
    with pytest.raises(error):
        list(_data.iter_batches(data))


@pytest.mark.parametrize("steps, error, match", [
    (0, ValueError, r"`steps` must be a positive int\. Received: steps=0"),
    (-1, ValueError, r"`steps` must be a positive int\. Received: steps=-1"),
    (1.5, TypeError, r"`steps` must be a positive int or None\. Received: steps=1\.5"),
    (True, TypeError, r"`steps` must be a positive int or None\. Received: steps=True"),
])
def test_iter_batches_rejects_bad_steps(steps, error, match):
    with pytest.raises(error, match=match):
        list(_data.iter_batches(np.zeros((3, 1)), steps=steps))


# recalibrate -----------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 1])
def test_input_bn_matches_numpy_population(axis):
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, (70, 4, 4, 3)).astype("float32")
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), keras.layers.BatchNormalization(axis=axis)]
    )
    # 70 samples in batches of 32, 32 and 6: the last batch is smaller.
    assert recalibrate(model, x, verbose=0) == 1
    _assert_population(model.layers[0], x, axis=axis)


def test_conv_bn_and_downstream_bn_follow_fit_semantics():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, (70, 6, 6, 2)).astype("float32")
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Dropout(0.5)(h)
    h = frozenbn.BatchNormalization(name="bn2", frozen=True, epsilon=1e-3)(h)
    model = keras.Model(inputs, h)
    before = _weights_by_path(model)

    assert recalibrate(model, (x, np.zeros(70)), batch_size=32, verbose=0) == 2

    conv_out = _np(model.get_layer("conv")(x)).astype(np.float64)
    _assert_population(model.get_layer("bn1"), conv_out)
    # bn2 sees bn1's output normalized with each batch's statistics (as in
    # fit; gamma=1, beta=0) and Dropout off.
    normalized = np.concatenate(
        [
            (c - c.mean((0, 1, 2))) / np.sqrt(c.var((0, 1, 2)) + 1e-3)
            for c in (conv_out[:32], conv_out[32:64], conv_out[64:])
        ]
    )
    _assert_population(model.get_layer("bn2"), normalized)

    after = _weights_by_path(model)
    for path, value in before.items():
        if "moving_" in path:
            assert not np.array_equal(value, after[path]), path
        else:
            np.testing.assert_array_equal(value, after[path], err_msg=path)
    for name in ("bn1", "bn2"):
        assert "call" not in vars(model.get_layer(name))
    assert model.get_layer("bn2").frozen is True
    assert model.get_layer("bn1").momentum == 0.99


def test_augmentation_layers_run_in_inference_mode():
    # Keras's augmentation layers default to `training=True`; the statistics
    # are those of the images `predict` and `evaluate` see.
    x = np.random.default_rng(4).uniform(0.0, 0.5, (40, 4, 4, 3))
    model = keras.Sequential([
        keras.Input((4, 4, 3)),
        # Adds 0.5 to every pixel when it augments.
        keras.layers.RandomBrightness((0.5, 0.5), value_range=(0.0, 1.0)),
        keras.layers.BatchNormalization(name="bn"),
    ])
    recalibrate(model, x.astype("float32"), batch_size=16, verbose=0)
    _assert_population(model.get_layer("bn"), x)


def test_masked_inputs_use_unmasked_positions_only():
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 20, (40, 7))
    tokens[:, 4:] = 0  # padding
    tokens[::3, 2:] = 0
    inputs = keras.Input((7,), dtype="int32")
    h = keras.layers.Embedding(20, 3, mask_zero=True, name="emb")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inputs, h)
    recalibrate(model, tokens, batch_size=16, verbose=0)
    embedded = _np(model.get_layer("emb")(tokens))
    _assert_population(model.get_layer("bn"), embedded[tokens != 0])


def test_renorm_layer_gets_consistent_stddev():
    rng = np.random.default_rng(4)
    x = rng.normal(-2.0, 3.0, (50, 5)).astype("float32")
    bn = keras.layers.BatchNormalization(renorm=True, epsilon=0.01)
    model = keras.Sequential([keras.Input((5,)), bn])
    recalibrate(model, x, batch_size=20, verbose=0)
    _assert_population(bn, x)
    np.testing.assert_allclose(
        _np(bn.moving_stddev), np.sqrt(x.var(0) + 0.01), rtol=RTOL
    )


def test_data_forms_give_identical_statistics():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, (45, 3)).astype("float32")
    y = rng.normal(size=(45, 1)).astype("float32")

    def stats_for(data, **kwargs):
        bn = keras.layers.BatchNormalization()
        model = keras.Sequential([keras.Input((3,)), bn])
        recalibrate(model, data, verbose=0, **kwargs)
        return np.concatenate(_stats(bn))

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]

    reference = stats_for(x, batch_size=16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    generator = ((x[i : i + 16], y[i : i + 16]) for i in range(0, 45, 16))
    for data in (dataset, generator, Batches(), (x, y)):
        np.testing.assert_allclose(
            stats_for(data, batch_size=16), reference, rtol=1e-6
        )
    # `steps` limits the pass: two batches of 16 only.
    np.testing.assert_allclose(
        stats_for(dataset.repeat(), steps=2)[:3], x[:32].mean(0), rtol=1e-5
    )


def test_multi_input_forms_that_fit_takes_give_identical_statistics():
    rng = np.random.default_rng(8)
    a = rng.normal(1.0, 2.0, (40, 3)).astype("float32")
    b = rng.normal(-1.0, 3.0, (40, 2)).astype("float32")
    y = rng.normal(size=(40, 1)).astype("float32")

    def stats_for(data):
        inputs = [keras.Input((3,), name="a"), keras.Input((2,), name="b")]
        h = keras.layers.Concatenate()(inputs)
        model = keras.Model(inputs, keras.layers.BatchNormalization()(h))
        assert recalibrate(model, data, batch_size=16, verbose=0) == 1
        return np.concatenate(_stats(model.layers[-1]))

    reference = np.concatenate([
        np.concatenate([a, b], axis=1).mean(0),
        np.concatenate([a, b], axis=1).var(0),
    ])
    for data in ([a, b], {"a": a, "b": b}, ([a, b], y), ((a, b), y),
                 ((a, b), None), ((a, b),)):
        np.testing.assert_allclose(stats_for(data), reference, rtol=1e-5)


def test_recalibration_closes_the_fit_evaluate_gap():
    rng = np.random.default_rng(6)
    x = rng.normal(10.0, 3.0, (128, 8)).astype("float32")
    y = (x[:, :1] > 10.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(momentum=0.999),
            keras.layers.ReLU(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    # After 20 steps at momentum 0.999 the moving statistics still are
    # mostly the initial (0, 1): inference is a different model.
    before_loss = model.evaluate(x, y, verbose=0)
    before = _weights_by_path(model)

    recalibrate(model, x, batch_size=32, verbose=0)

    after_loss = model.evaluate(x, y, verbose=0)
    assert after_loss <= before_loss
    assert after_loss < 0.9 * before_loss  # not just "not worse"
    after = _weights_by_path(model)
    for path in before:
        if "moving_" not in path:
            np.testing.assert_array_equal(before[path], after[path])


def test_single_batch_recalibration_makes_inference_equal_training():
    # With all data in one batch the population statistics are that batch's
    # statistics, so inference after recalibration must reproduce the
    # training-mode forward pass of every BN layer of a real backbone.
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (8, 64, 64, 3)).astype("float32")
    model = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(64, 64, 3)
    )
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    expected = _np(reference(x, training=True))  # updates only the clone

    n = recalibrate(model, x, batch_size=8, verbose=0)

    assert n == len(frozenbn._walk.batch_norm_layers(model)) == 52
    got = _np(model(x, training=False))
    scale = np.abs(expected).max()
    # Float32 rounding (compiled vs eager, fused kernels vs keras.ops),
    # amplified by the 32-position channels deep in the net: up to 7e-5 *
    # scale measured; wrong statistics would differ by ~scale.
    np.testing.assert_allclose(got, expected, atol=2e-4 * scale)


def test_include_selects_layers_and_others_keep_statistics():
    x = np.random.default_rng(8).normal(2.0, 1.0, (20, 3)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.BatchNormalization(name="a"),
            keras.layers.BatchNormalization(name="b"),
        ]
    )
    n = recalibrate(model, x, verbose=0, include=lambda l: l.name == "b")
    assert n == 1
    mean_a, var_a = _stats(model.get_layer("a"))
    np.testing.assert_array_equal(mean_a, np.zeros(3))
    np.testing.assert_array_equal(var_a, np.ones(3))
    # "a" keeps running with its (initial) moving statistics.
    _assert_population(model.get_layer("b"), x / np.sqrt(1 + 1e-3))


def test_failure_mid_pass_changes_nothing():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.BatchNormalization(name="bn")]
    )

    def broken():
        yield np.ones((4, 2), "float32") * 7
        raise RuntimeError("data pipeline failed")

    with pytest.raises(RuntimeError, match="data pipeline failed"):
        recalibrate(model, broken(), verbose=0)
    bn = model.get_layer("bn")
    assert "call" not in vars(bn)
    np.testing.assert_array_equal(_stats(bn)[0], np.zeros(2))
    with pytest.raises(ValueError, match="no batches"):
        recalibrate(model, iter([]), verbose=0)
    assert "call" not in vars(bn)


def test_rejects_non_models_and_handles_models_without_bn():
    with pytest.raises(TypeError, match="recalibrate"):
        recalibrate("model.keras", np.zeros((2, 2)))
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)],
                             name="plain")
    with pytest.warns(UserWarning, match=r"^frozenbn.recalibrate changed "
                      r"nothing: it has no BatchNormalization layer\.$"):
        assert recalibrate(plain, np.zeros((2, 2)), verbose=0) == 0


def test_a_call_that_measures_no_layer_warns():
    x = np.ones((4, 3), "float32")
    model = _statistics_model()
    with pytest.warns(UserWarning, match=r"changed nothing: `include` "
                      r"selects none of its 1 BatchNormalization layer\(s\)\.$"):
        assert recalibrate(model, x, verbose=0, include=lambda l: False) == 0
    custom = keras.Sequential([keras.Input((3,)), _ShiftedBN()], name="m")
    with pytest.warns(UserWarning, match=r"changed nothing: every selected "
                      r"BatchNormalization layer of 'm' is a custom subclass"):
        assert recalibrate(custom, x, verbose=0) == 0
    np.testing.assert_array_equal(_stats(model.layers[0])[0], np.zeros(3))


def test_mixed_precision_layer_statistics_in_float32():
    x = np.random.default_rng(9).normal(3.0, 0.5, (64, 4)).astype("float32")
    bn = keras.layers.BatchNormalization(dtype="mixed_float16")
    model = keras.Sequential([keras.Input((4,)), bn])
    recalibrate(model, x, verbose=0)
    assert bn.moving_mean.dtype == "float32"
    _assert_population(bn, x.astype("float16").astype("float32"))


@testing.requires_tensorflow
def test_under_a_distribution_strategy():
    import tensorflow as tf

    x = np.random.default_rng(10).normal(1.0, 2.0, (40, 3)).astype("float32")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.BatchNormalization()]
        )
    assert recalibrate(model, x, batch_size=16, verbose=0) == 1
    _assert_population(model.layers[0], x)


# The compiled pass ---------------------------------------------------------


class _CountingLayer(keras.layers.Layer):
    """Identity that counts how often its Python `call` runs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.runs = 0

    def call(self, inputs):
        self.runs += 1
        return inputs


def test_compiled_pass_runs_python_once_and_is_reused(caplog):
    counter = _CountingLayer()
    model = keras.Sequential(
        [keras.Input((4, 4, 2)), counter, keras.layers.BatchNormalization()]
    )
    x = np.random.default_rng(11).normal(2.0, 3.0, (48, 4, 4, 2))
    x = x.astype("float32")
    built = counter.runs  # Sequential's symbolic build
    with caplog.at_level(logging.WARNING, logger="frozenbn"):
        recalibrate(model, x, batch_size=16, verbose=0)
        recalibrate(model, x, batch_size=16, verbose=0)
    _assert_population(model.layers[1], x)
    assert not [r for r in caplog.records if "eagerly" in r.getMessage()]
    if keras.config.backend() == "torch":
        assert counter.runs - built == 6  # eager: every batch of both calls
    else:
        # Traced once for both calls of 3 batches: no op-by-op execution.
        assert counter.runs - built == 1


class _HostRoundTrip(keras.layers.Layer):
    """A layer whose `call` cannot be traced: it goes through NumPy."""

    def call(self, inputs):
        return ops.convert_to_tensor(ops.convert_to_numpy(inputs) * 2.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def test_untraceable_layer_falls_back_to_the_eager_pass(caplog):
    bn = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((3,)), _HostRoundTrip(), bn])
    x = np.random.default_rng(12).normal(1.0, 2.0, (40, 3)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="frozenbn"):
        assert recalibrate(model, x, batch_size=16, verbose=0) == 1
    _assert_population(bn, 2.0 * x)
    eager = [
        r.getMessage() for r in caplog.records if "eagerly" in r.getMessage()
    ]
    if keras.config.backend() != "torch":  # torch has no compiled step
        assert len(eager) == 1 and "compiled step failed" in eager[0]


def test_pooling_is_exact_when_the_mean_dwarfs_the_spread():
    # float32 batch moments, pooled on the device with Chan's update: no
    # E[x^2] - E[x]^2 cancellation (that would lose the variance entirely).
    rng = np.random.default_rng(13)
    x = (1e3 + rng.normal(0.0, 0.5, (301, 3))).astype("float32")
    bn = keras.layers.BatchNormalization()
    model = keras.Sequential([keras.Input((3,)), bn])
    recalibrate(model, x, batch_size=16, verbose=0)  # 19 batches, last 13
    _assert_population(bn, x)


def test_a_layer_called_twice_pools_both_calls():
    shared = keras.layers.BatchNormalization(name="shared")
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], [shared(a), shared(b)])
    rng = np.random.default_rng(14)
    xa = rng.normal(0.0, 1.0, (32, 3)).astype("float32")
    xb = rng.normal(4.0, 2.0, (32, 3)).astype("float32")
    assert recalibrate(model, [xa, xb], batch_size=16, verbose=0) == 1
    _assert_population(shared, np.concatenate([xa, xb]))


class _WithUnusedBN(keras.Model):
    """Keeps a BN sublayer that `call` never uses (as some keras-hub models)."""

    def __init__(self):
        super().__init__(name="with_unused")
        self.used = keras.layers.BatchNormalization(name="used")
        self.unused = keras.layers.BatchNormalization(name="unused")

    def call(self, inputs):
        return self.used(inputs)


def test_layers_never_called_are_reported_and_left_unchanged(caplog):
    model = _WithUnusedBN()
    x = np.random.default_rng(15).normal(3.0, 1.0, (20, 2)).astype("float32")
    model(x)
    model.unused.build((None, 2))  # built (restored weights) but not called
    with caplog.at_level(logging.WARNING, logger="frozenbn.recalibrate"):
        assert recalibrate(model, x, verbose=0) == 1
    _assert_population(model.used, x)
    np.testing.assert_array_equal(_stats(model.unused)[0], np.zeros(2))
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == "frozenbn.recalibrate"
    assert "never called" in warning.getMessage()
    assert "'unused'" in warning.getMessage()


class _ShiftedBN(keras.layers.BatchNormalization):
    """A custom subclass whose `call` does more than Keras BN."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=training, mask=mask) + 1.0


def test_custom_subclasses_are_skipped_with_a_reason(caplog):
    custom = _ShiftedBN(name="custom")
    stock = keras.layers.BatchNormalization(name="stock")
    model = keras.Sequential([keras.Input((3,)), custom, stock])
    x = np.random.default_rng(16).normal(2.0, 1.0, (32, 3)).astype("float32")
    with caplog.at_level(logging.WARNING, logger="frozenbn.recalibrate"):
        assert recalibrate(model, x, verbose=0) == 1
    np.testing.assert_array_equal(_stats(custom)[0], np.zeros(3))
    # The custom layer ran its own call, in inference mode.
    _assert_population(stock, x / np.sqrt(1 + 1e-3) + 1.0)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'custom'" in warning and "_ShiftedBN" in warning


# Keras's argument names and order, and 0.1's calls -----------------------


def _statistics_model():
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(name="bn")]
    )


def test_keras_names_and_old_positional_order_give_the_same_pass():
    # 70 samples: batch_size 32 and steps 2 take the first 64 samples.
    x = np.random.default_rng(11).normal(2.0, 3.0, (70, 3)).astype("float32")
    keras_order = _statistics_model()
    with testing.no_frozenbn_warnings(DeprecationWarning):
        recalibrate(keras_order, x, batch_size=32, steps=2, verbose=0)
    _assert_population(keras_order.get_layer("bn"), x[:64])
    old = _statistics_model()
    with pytest.warns(DeprecationWarning, match=r"pass steps=, verbose=, "
                      r"batch_size= by keyword"):
        frozenbn.recalibrate(old, x, 2, 0, 32)
    np.testing.assert_array_equal(_stats(old.get_layer("bn")),
                                  _stats(keras_order.get_layer("bn")))


def test_data_keyword_is_renamed_x_with_a_warning():
    x = np.random.default_rng(12).normal(size=(40, 3)).astype("float32")
    model = _statistics_model()
    with pytest.warns(DeprecationWarning, match=r"recalibrate\(data=\.\.\.\) "
                      r"is now frozenbn\.recalibrate\(x=\.\.\.\)"):
        assert frozenbn.recalibrate(model, data=x, verbose=0) == 1
    _assert_population(model.get_layer("bn"), x)
    with pytest.warns(DeprecationWarning, match=r"audit\(data=\.\.\.\)"):
        report = frozenbn.audit(model, data=x, verbose=0)
    assert report.samples == 40
    with pytest.warns(DeprecationWarning, match=r"PreciseBN\(data=\.\.\.\)"):
        callback = frozenbn.callbacks.PreciseBN(data=x, every_n_epochs=2)
    assert callback.x is x and callback.every_n_epochs == 2


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, x: recalibrate(m, x, 1, 0, 32, 5), TypeError,
         r"recalibrate\(\) takes 5 positional arguments at most"),
        (lambda m, x: recalibrate(m, x, 1, steps=2), TypeError,
         r"recalibrate\(\) got multiple values for argument `steps`"),
        (lambda m, x: recalibrate(m, x, data=x), TypeError,
         r"recalibrate\(\) got `data` and `x`; pass `x`"),
        (lambda m, x: recalibrate(m, x, verbose=3), ValueError,
         r'`verbose` must be 0, 1, 2 or "auto"\. Received: verbose=3'),
        (lambda m, x: recalibrate(m, x, verbose="on"), TypeError,
         r'`verbose` must be 0, 1, 2 or "auto"\. Received: verbose=\'on\''),
        (lambda m, x: frozenbn.audit(m, x, 1.5), TypeError,
         r"`batch_size` must be a positive int or None\. Received: "
         r"batch_size=1\.5"),
    ],
)
def test_argument_order_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(_statistics_model(), np.zeros((4, 3), "float32"))


def test_audit_takes_keras_positional_order():
    x = np.random.default_rng(13).normal(size=(70, 3)).astype("float32")
    with testing.no_frozenbn_warnings(DeprecationWarning):
        report = frozenbn.audit(_statistics_model(), x, 16, 2, 0)
    assert (report.steps, report.samples, report.batch_size) == (2, 32, 16)
