"""Shared checks for frozenbn's tests (our own, not `keras.src.testing`)."""

import contextlib
import glob
import importlib.util
import json
import os
import warnings

import keras
import numpy as np
import pytest

# The one backend gate of the suite: what Keras runs on, not what the
# environment asked for. Tests gate with these marks, never with an inline
# `pytest.skip`, so the skip reason always names the backend.
BACKEND = keras.config.backend()


def requires_backend(*names, reason):
    """Skips a test unless Keras runs on one of `names`."""
    return pytest.mark.skipif(
        BACKEND not in names,
        reason=f"needs the {' or '.join(names)} backend: {reason}",
    )


def not_on_backend(name, reason):
    """Skips a test (or one parameter of it) when Keras runs on `name`."""
    return pytest.mark.skipif(BACKEND == name, reason=f"not on {name}: {reason}")


def full_tier_unless(name):
    """Marks a backend-independent end-to-end test (a script, a loading
    path) `full` except on backend `name`: every push runs it once, in the
    run of `name`; `--full` runs it on every backend."""
    if BACKEND == name:
        return lambda test: test
    return pytest.mark.full


requires_tensorflow = requires_backend(
    "tensorflow", reason="tf.distribute, SavedModel, tf ops")

# Every linear layer that fold and fuse rewrite, by case name:
# `(input shape without the batch, a function that makes the layer)`.
LINEAR_LAYERS = {
    "dense": ((7,), lambda: keras.layers.Dense(5)),
    "dense_3d": ((3, 7), lambda: keras.layers.Dense(5)),
    "conv1d": ((9, 3), lambda: keras.layers.Conv1D(4, 3, strides=2)),
    "conv1d_causal": (
        (9, 3),
        lambda: keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2),
    ),
    "conv2d_groups": ((6, 6, 4), lambda: keras.layers.Conv2D(6, 3, groups=2)),
    "conv2d_channels_first": (
        (3, 7, 6),
        lambda: keras.layers.Conv2D(5, 3, data_format="channels_first"),
    ),
    "conv3d": ((5, 5, 5, 2), lambda: keras.layers.Conv3D(3, 2)),
    "depthwise2d": (
        (6, 6, 3),
        lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2),
    ),
    "depthwise1d": (
        (8, 3),
        lambda: keras.layers.DepthwiseConv1D(3, depth_multiplier=2),
    ),
    "separable2d": (
        (7, 7, 3),
        lambda: keras.layers.SeparableConv2D(4, 3, depth_multiplier=2),
    ),
    "separable1d": ((9, 2), lambda: keras.layers.SeparableConv1D(4, 3)),
    "conv2d_transpose": (
        (5, 5, 3),
        lambda: keras.layers.Conv2DTranspose(4, 3, strides=2),
    ),
}


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
PACKAGE = os.path.join(REPO, "frozenbn")


def package_modules() -> list:
    """The paths of the package's modules outside the demo (an application
    beside the library): the library's, the package root and the command
    line."""
    return [path for path in sorted(glob.glob(
                os.path.join(PACKAGE, "**", "*.py"), recursive=True))
            if not os.path.relpath(path, PACKAGE).startswith("demo" + os.sep)]


def library_modules() -> list:
    """The paths of the library's modules, subpackages included: not the
    package root, the command line or the demo (they sit beside it)."""
    return [path for path in package_modules()
            if os.path.relpath(path, PACKAGE) not in ("__init__.py", "cli.py")]


def committed_result(name: str) -> dict:
    """A committed benchmark results file (`benchmarks/results/NAME`)."""
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def no_frozenbn_warnings(category):
    """Fails the block on a warning of `category` that names frozenbn."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*frozenbn", category)
        yield


def load_script(path: str):
    """Imports a script of the repository (`benchmarks/gap.py`,
    `examples/x.py`) as a module, by its path relative to the root."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(
        f"_script_{name}", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_block_current(script, page_and_marker, block, command):
    """The page's `<!-- marker -->` block is `block`, what `command` (a
    benchmark script's `--docs`) writes; `script` is the loaded script."""
    page, marker = page_and_marker
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        text = f.read()
    assert script._common.replace_block(text, marker, block) == text, (
        f"{page} is stale: run {command}")


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


def rounding_floor(model, x, reference):
    """How far float32 rounding alone moves `model`'s outputs on `x`.

    `reference` is `outputs(model, x)`, which the caller already has.

    The largest output change when every BN moving variance moves by one
    float32 step, as an exact rewrite's rounding moves it. About 1e-6 of
    the outputs' scale for most networks with random weights; the deepest
    (EfficientNetV2M and L at 32x32) amplify it to the outputs' own scale,
    and no rewrite of them can be checked closer than that: there
    `assert_pairs_exact` checks each rewritten pair on its own. The model
    is left as it was.
    """
    layers = layers_of(model, keras.layers.BatchNormalization)
    saved = [to_numpy(layer.moving_variance) for layer in layers]
    for layer, variance in zip(layers, saved):
        layer.moving_variance.assign(np.nextafter(variance, np.inf))
    try:
        moved = outputs(model, x)
    finally:
        for layer, variance in zip(layers, saved):
            layer.moving_variance.assign(variance)
    return max(
        float(np.max(np.abs(a.astype("float64") - b.astype("float64"))))
        for a, b in zip(reference, moved)
    )


def assert_pairs_exact(model, rewrite, pairs):
    """Each (layer, BN) pair of `model`, rewritten alone, is exact.

    For each `(layer path, BN path)` of a fold or fuse report, a copy of the
    two layers (same weights) is rewritten by `rewrite` (`frozenbn.fold` or
    `frozenbn.fuse`) as a model of its own and compared with them, in
    inference mode, on random inputs of the pair's input shape, within 1e-5
    of the pair's output scale. This holds where the whole model's
    comparison cannot: on the deepest random networks (EfficientNetV2M and
    L at 32x32) one float32 step of rounding reaches the outputs' scale
    (`rounding_floor`).
    """
    from frozenbn import _clone
    from frozenbn import _keras_private
    from frozenbn import _walk

    paths = _walk.paths(model)
    at = {paths[id(layer)]: layer
          for layer in _keras_private.iter_layers(model)}
    rng = np.random.default_rng(0)
    for names in pairs:
        layers = [at[path] for path in names]
        shape = [16 if d is None else d for d in layers[0].input.shape[1:]]
        pair = keras.Sequential([keras.Input(shape)] + [
            _clone.copy_layer(layer) for layer in layers])
        for copy, layer in zip(pair.layers, layers):
            copy.set_weights(layer.get_weights())
        rewritten, report = rewrite(pair)
        assert len(report.pairs) == 1, (names, report)
        x = rng.normal(size=[2] + shape).astype("float32")
        expected = to_numpy(pair(x)).astype("float64")
        error = np.max(np.abs(to_numpy(rewritten(x)) - expected))
        scale = float(np.max(np.abs(expected)))
        assert error <= 1e-5 * scale + 1e-6, (names, error, scale)


def paths_in(model, *names):
    """The paths a report gives layers `names` of `model` (at its top)."""
    return tuple(f"{model.name}/{name}" for name in names)


def by_name(model, entries):
    """`{name: value}` for report entries `(path, value)` at `model`'s top."""
    prefix = f"{model.name}/"
    assert all(path.startswith(prefix) for path, _ in entries), entries
    return {path[len(prefix):]: value for path, value in entries}


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


def small_resnet(weights=None, include_top=True, input_shape=None, **kwargs):
    """A stand-in for `keras.applications.ResNet50` in the docs' examples
    (Conv, BN, ReLU twice): their frozenbn and Keras calls are the same, and
    it compiles in a second. `weights` is ignored (no download here)."""
    assert weights in (None, "imagenet") and not include_top and not kwargs
    return keras.Sequential([
        keras.Input(input_shape or (None, None, 3)),
        keras.layers.Conv2D(8, 3, strides=2, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(8, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ], name="small_resnet")


def images(n=2, size=32, seed=0):
    """`n` random float32 RGB images in [0, 1] of side `size`."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (n, size, size, 3)).astype("float32")


def outputs(model, x, training=False):
    """Every output tensor of `model(x)` as a NumPy array, flattened."""
    return [to_numpy(t) for t in keras.tree.flatten(model(x, training=training))]


def assert_outputs_equal(expected, got):
    """Two `outputs` lists equal bit for bit."""
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert a.shape == b.shape and np.array_equal(a, b), np.max(np.abs(a - b))


def assert_outputs_close(expected, got, atol, rtol):
    """Two `outputs` lists equal to `atol + rtol * max|expected|` per tensor."""
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        assert np.all(np.isfinite(a64)) and np.all(np.isfinite(b64))
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        error = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        assert error <= atol + rtol * scale, (error, scale)


def layers_of(model, cls):
    """Every layer of `model` (nested ones included) that is a `cls`."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, cls)
    ]


def count_layers(model, cls):
    return len(layers_of(model, cls))


def layer_classes(model):
    return [type(layer) for layer in model._flatten_layers()]


def assert_same_weight_values(a, b):
    """`a` and `b` hold the same weight values, bit for bit, in any order.

    Independent of how layers are listed (a model rebuilt from its config
    may list its sublayers in another order): the multisets of (shape,
    dtype, bytes) must be equal.
    """

    def key(array):
        return (array.shape, str(array.dtype), array.tobytes())

    wa = sorted((key(w) for w in weights_of(a)), key=repr)
    wb = sorted((key(w) for w in weights_of(b)), key=repr)
    assert len(wa) == len(wb)
    assert wa == wb


# Attributes through which dropout-like layers (Keras's and keras-hub's
# DropPath / stochastic depth) draw their randomness.
_STOCHASTIC_ATTRIBUTES = {"rate": 0.0, "drop_rate": 0.0, "stddev": 0.0}


def disable_stochastic_layers(model):
    """Turns dropout-like layers into identities, so training mode is
    deterministic apart from BatchNormalization. Returns how many changed."""
    changed = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        name = type(layer).__name__
        if not any(word in name for word in ("Dropout", "DropPath", "Noise")):
            continue
        for attribute, value in _STOCHASTIC_ATTRIBUTES.items():
            if isinstance(getattr(layer, attribute, None), (int, float)):
                object.__setattr__(layer, attribute, value)
                changed += 1
    return changed


def called_layers(model, x, cls):
    """The layers of class `cls` that `model(x)` calls (a test oracle).

    Each such layer's `call` is wrapped on the instance for one forward
    pass in inference mode (some graphs record `training=True` for a layer,
    which would update its statistics in a call with `training` unset);
    layers a model holds but never calls are not returned.
    """
    called, layers = set(), layers_of(model, cls)

    def recording(layer, call):
        def wrapped(*args, **kwargs):
            called.add(id(layer))
            return call(*args, **kwargs)

        return wrapped

    for layer in layers:
        object.__setattr__(layer, "call", recording(layer, layer.call))
    try:
        model(x, training=False)
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")
    return [layer for layer in layers if id(layer) in called]

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


# Under `pytest -n N` (pytest-xdist), tests that share a costly
# module-scoped fixture must run in one worker, or each worker builds it
# again: every check of one model of the sweep (one fixture value per
# model), and these whole modules.
SHARED_WORKER_MODULES = ("tests/test_convert.py", "tests/test_distribution.py")
SWEEP_MODULE = "tests/test_model_sweep.py"


def worker_scope(nodeid: str) -> str:
    """The unit of tests pytest-xdist sends to one worker, from a node id.

    A sweep check's scope is its model (the parameter id in brackets); a
    test of `SHARED_WORKER_MODULES` has its module's; any other test is its
    own, so those balance freely.
    """
    path, _, name = nodeid.partition("::")
    if path == SWEEP_MODULE and name.endswith("]"):
        return path + name[name.index("["):]
    if path in SHARED_WORKER_MODULES:
        return path
    return nodeid
