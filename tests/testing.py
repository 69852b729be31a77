"""Shared checks for frozenbn's tests (our own, not `keras.src.testing`)."""

import json

import keras
import numpy as np


def randomize_batch_norm(model, seed=0):
    """Gives every BN layer non-trivial statistics and affine parameters."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        shape = layer.moving_mean.shape
        layer.moving_mean.assign(rng.normal(0, 0.5, shape).astype("float32"))
        layer.moving_variance.assign(
            rng.uniform(0.5, 2.0, shape).astype("float32")
        )
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0, 0.2, shape).astype("float32"))
    return model


def weights_of(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def assert_weights_equal(a, b):
    """Every weight array equal bit for bit (same count, shapes, values)."""
    wa, wb = weights_of(a), weights_of(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def run_serialization_test(layer):
    """Config JSON round trip and `serialize_keras_object` round trip."""
    config = layer.get_config()
    as_json = _json_normal(config)  # tuples become lists, as in a file
    revived = layer.__class__.from_config(config)
    assert _json_normal(revived.get_config()) == as_json
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(_json_normal(serialized))
    assert type(revived) is type(layer)
    assert _json_normal(revived.get_config()) == as_json
    return revived


def _json_normal(obj):
    return json.loads(json.dumps(obj))
