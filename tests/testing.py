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


def outputs_and_gradients(layer, x, upstream, training=True):
    """`layer(x)` and the gradients of `sum(layer(x) * upstream)`.

    Returns `(outputs, gradients)` as NumPy arrays, the gradients with
    respect to `x` and then each of `layer.trainable_weights`, computed by
    the backend's own autodiff (TensorFlow tape, torch autograd, jax.grad).
    """
    backend = keras.config.backend()
    weights = layer.trainable_weights
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x] + [w.value for w in weights])
        return y.numpy(), [g.numpy() for g in grads]
    if backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        y = layer(x, training=training)
        loss = (y * torch.as_tensor(upstream)).sum()
        grads = torch.autograd.grad(loss, [x] + [w.value for w in weights])
        return to_numpy(y.detach()), [to_numpy(g) for g in grads]
    import jax

    frozen = [w.value for w in layer.non_trainable_weights]

    def loss(x, trainable):
        y, _ = layer.stateless_call(trainable, frozen, x, training=training)
        return (y * upstream).sum(), y

    gradient = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (_, y), grads = gradient(x, [w.value for w in weights])
    return to_numpy(y), [to_numpy(grads[0])] + [to_numpy(g) for g in grads[1]]
