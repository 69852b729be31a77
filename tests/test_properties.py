"""Property tests: frozenbn.BatchNormalization against Keras BN.

For random shapes (rank 2 to 5), axes, momenta, `center`/`scale` and dtype
policies (float32, mixed_float16, mixed_bfloat16), the layer with
`frozen=False` is Keras BN bit for bit (outputs and moving statistics, in
training and in inference), and with `frozen=True` its output does not
depend on `training`, equals Keras inference and never moves its statistics.
"""

import keras
import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import frozenbn
from tests import testing


def _policies():
    policies = ["float32", "mixed_bfloat16"]
    if keras.config.backend() != "torch":  # no float16 BN kernels on CPU
        policies.append("mixed_float16")
    return sorted(policies)


@st.composite
def _cases(draw, max_rank=5, policies=None):
    rank = draw(st.integers(2, max_rank))
    dims = st.lists(st.integers(1, 4), min_size=rank, max_size=rank)
    shape = tuple(draw(dims))
    return {
        "shape": shape,
        "axis": draw(st.integers(-rank, rank - 1)),
        "momentum": draw(
            st.one_of(
                st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
                st.floats(0.0, 1.0, allow_nan=False),
            )
        ),
        "center": draw(st.booleans()),
        "scale": draw(st.booleans()),
        "policy": draw(st.sampled_from(policies or _policies())),
        "offset": draw(st.floats(-3.0, 3.0)),
        "spread": draw(st.floats(0.1, 4.0)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _layers(case, frozen):
    kwargs = dict(
        axis=case["axis"],
        momentum=case["momentum"],
        center=case["center"],
        scale=case["scale"],
        dtype=case["policy"],
    )
    stock = keras.layers.BatchNormalization(**kwargs)
    ours = frozenbn.BatchNormalization(frozen=frozen, **kwargs)
    stock.build(case["shape"])
    ours.build(case["shape"])
    testing.randomize_batch_norm(stock, seed=case["seed"])
    for a, b in zip(stock.weights, ours.weights):
        b.assign(a.value)
    return stock, ours


def _inputs(case, layer, seed_offset=0):
    rng = np.random.default_rng(case["seed"] + seed_offset)
    x = rng.normal(case["offset"], case["spread"], case["shape"])
    return keras.ops.cast(x.astype("float32"), layer.compute_dtype)


def _assert_same_bits(a, b):
    a, b = testing.to_numpy(a), testing.to_numpy(b)
    assert a.shape == b.shape
    # NaN positions must agree too (they do not occur with these inputs).
    assert np.array_equal(a, b, equal_nan=True), np.max(np.abs(a - b))


def _check_unfrozen_is_keras(case):
    stock, ours = _layers(case, frozen=False)
    for step in range(2):  # two updates: the moving averages compound
        x = _inputs(case, stock, step)
        _assert_same_bits(ours(x, training=True), stock(x, training=True))
        testing.assert_weights_equal(stock, ours)
    x = _inputs(case, stock, 7)
    _assert_same_bits(ours(x, training=False), stock(x, training=False))
    _assert_same_bits(ours(x), stock(x))


def _check_frozen_ignores_training(case):
    stock, ours = _layers(case, frozen=True)
    before = testing.weights_of(ours)
    x = _inputs(case, stock)
    expected = stock(x, training=False)
    for training in (True, False, None):
        out = ours(x, training=training)
        assert keras.backend.standardize_dtype(out.dtype) == ours.compute_dtype
        _assert_same_bits(out, expected)
    for a, b in zip(before, testing.weights_of(ours)):
        assert np.array_equal(a, b)
    assert all(w.dtype == "float32" for w in ours.weights)


@settings(max_examples=25, deadline=None)
@given(case=_cases())
def test_unfrozen_equals_keras_bit_for_bit(case):
    _check_unfrozen_is_keras(case)


@settings(max_examples=25, deadline=None)
@given(case=_cases())
def test_frozen_is_independent_of_training_and_never_updates(case):
    _check_frozen_ignores_training(case)


@settings(max_examples=10, deadline=None)
@given(case=_cases(max_rank=4, policies=["float32"]))
def test_smoke_frozen_and_unfrozen_properties(case):
    _check_unfrozen_is_keras(case)
    _check_frozen_ignores_training(case)
