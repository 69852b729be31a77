"""Mixed precision and XLA (`jit_compile=True`) with frozen layers.

Tolerances for the outputs of a mixed-precision model against the same
weights computed in float32: 1e-2 relative for `mixed_float16` (10-bit
mantissa, a few roundings per layer) and 5e-2 for `mixed_bfloat16` (7-bit
mantissa), each with an absolute floor of the same size for outputs near 0.
"""

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing

TOLERANCE = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}
POLICIES = [
    pytest.param("mixed_bfloat16"),
    pytest.param("mixed_float16", marks=testing.not_on_backend(
        "torch", "torch has no float16 batch norm kernels on CPU")),
]
JIT_COMPILE = testing.not_on_backend(
    "torch", "jit_compile=True on torch is torch.compile (slow on CPU)")


class _TraceCounter(keras.layers.Layer):
    """Identity layer that counts how often its `call` runs in Python.

    Inside a compiled train function `call` runs only while tracing, so the
    count is the number of traces (plus eager and symbolic calls).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, x, training=None):
        if training:
            self.traces += 1
        return x


def _model(policy=None, counter=None):
    """A Conv2D + BN + Dense + BN regressor, its BN statistics randomized."""
    dtype = policy  # `None` follows the global policy
    keras.utils.set_random_seed(0)  # the same initial weights every time
    layers = [
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(4, 3, use_bias=False, dtype=dtype, name="conv"),
        keras.layers.BatchNormalization(dtype=dtype, name="bn_conv"),
        keras.layers.ReLU(dtype=dtype),
        keras.layers.GlobalAveragePooling2D(dtype=dtype),
        keras.layers.Dense(3, dtype=dtype, name="dense"),
        keras.layers.BatchNormalization(dtype=dtype, name="bn_dense"),
    ]
    if counter is not None:
        layers.append(counter)
    layers.append(keras.layers.Dense(1, dtype=dtype, name="head"))
    model = keras.Sequential(layers)
    testing.randomize_batch_norm(model, seed=3)
    return model


def _data(n=32):
    rng = np.random.default_rng(4)
    x = rng.normal(0.5, 1.0, (n, 6, 6, 3)).astype("float32")
    y = rng.normal(0.0, 1.0, (n, 1)).astype("float32")
    return x, y


def _bn_layers(model):
    return [
        l for l in model.layers if isinstance(l, frozenbn.BatchNormalization)
    ]


def _float32_twin(model):
    """The same architecture and weights, computed in float32."""
    twin = frozenbn.convert(_model(policy="float32"))
    for a, b in zip(model.weights, twin.weights):
        assert a.shape == b.shape
        # A NumPy copy: on JAX a shared buffer would be donated by `predict`.
        b.assign(testing.to_numpy(a).astype("float32"))
    return twin


@pytest.mark.parametrize("policy", POLICIES)
def test_frozen_layer_keeps_float32_variables_and_computes_in_float32(policy):
    layer = frozenbn.BatchNormalization(frozen=True, dtype=policy)
    layer.build((8, 2))
    assert [w.dtype for w in layer.weights] == ["float32"] * 4
    assert layer.compute_dtype == policy.split("_")[1]
    # Statistics outside the float16 range: computing the normalization in
    # float16 would give inf variance and zero outputs.
    layer.moving_mean.assign(np.array([1000.0, -1000.0], "float32"))
    layer.moving_variance.assign(np.array([1e5, 4e5], "float32"))
    x = np.array([[1300.0, -1600.0]] * 8, "float32")
    out = layer(keras.ops.cast(x, layer.compute_dtype), training=True)
    assert keras.backend.standardize_dtype(out.dtype) == layer.compute_dtype
    got = testing.to_numpy(keras.ops.cast(out, "float32"))
    expected = (x - [1000.0, -1000.0]) / np.sqrt(np.array([1e5, 4e5]) + 1e-3)
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE[policy])
    # The statistics are untouched by a training call.
    np.testing.assert_array_equal(
        testing.to_numpy(layer.moving_mean), [1000.0, -1000.0]
    )


@JIT_COMPILE
@pytest.mark.parametrize("policy", POLICIES)
def test_jit_compiled_mixed_precision_fit(policy):
    keras.config.set_dtype_policy(policy)
    model = frozenbn.convert(_model(counter=_TraceCounter(name="counter")))
    counter = model.get_layer("counter")  # the copy's layer
    bns = _bn_layers(model)
    assert len(bns) == 2 and all(b.frozen for b in bns)
    for bn in bns:
        assert bn.compute_dtype == policy.split("_")[1]
        assert all(w.dtype == "float32" for w in bn.weights)
    before = {b.name: testing.weights_of(b) for b in bns}
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=True)
    x, y = _data()

    traces_before_fit = counter.traces
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    train_function = model.train_function
    traces_after_first_fit = counter.traces
    for _ in range(2):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # One trace of the train function for 8 steps, none in later fits.
    assert 1 <= traces_after_first_fit - traces_before_fit <= 2
    assert counter.traces == traces_after_first_fit
    assert model.train_function is train_function

    for bn in bns:
        mean, var, gamma, beta = (
            testing.to_numpy(v)
            for v in (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta)
        )
        gamma0, beta0, mean0, var0 = before[bn.name]
        np.testing.assert_array_equal(mean, mean0)
        np.testing.assert_array_equal(var, var0)
        assert np.max(np.abs(gamma - gamma0)) > 1e-4
        assert np.max(np.abs(beta - beta0)) > 1e-4

    keras.config.set_dtype_policy("float32")
    twin = _float32_twin(model)
    expected = testing.to_numpy(twin.predict(x, verbose=0))
    got = testing.to_numpy(model.predict(x, verbose=0)).astype("float32")
    # Frozen: the training-mode output is the inference output.
    np.testing.assert_array_equal(
        testing.to_numpy(keras.ops.cast(model(x, training=True), "float32")),
        testing.to_numpy(keras.ops.cast(model(x, training=False), "float32")),
    )
    tol = TOLERANCE[policy]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@JIT_COMPILE
def test_jit_compiled_float32_fit_matches_eager_fit():
    x, y = _data()
    results = []
    for jit in (False, True):
        model = frozenbn.convert(_model())
        model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit)
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append(model)
    eager, jitted = results
    for a, b in zip(testing.weights_of(eager), testing.weights_of(jitted)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # The statistics are bit for bit the initial ones in both.
    initial = frozenbn.convert(_model())
    for name in ("bn_conv", "bn_dense"):
        start = initial.get_layer(name)
        for model in results:
            bn = model.get_layer(name)
            for attr in ("moving_mean", "moving_variance"):
                np.testing.assert_array_equal(
                    testing.to_numpy(getattr(bn, attr)),
                    testing.to_numpy(getattr(start, attr)),
                )
            assert not np.array_equal(
                testing.to_numpy(bn.gamma), testing.to_numpy(start.gamma)
            )
