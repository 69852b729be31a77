"""The models `speed.py` compares: one base network, one copy per arm.

The base is a backbone (ResNet50 with `weights=None`, or a two-block CNN for
smoke tests) under a linear head, its BN statistics calibrated on one batch
so that the network is numerically sane. Each training arm differs from it
only in its BatchNormalization layers:

- `stock`: Keras BN (batch statistics in training);
- `keras_trainable_false`: Keras BN with `trainable=False` on the BN layers
  only (moving statistics, gamma/beta frozen);
- `naive_frozen`: Keras BN always called with `training=False`, gamma/beta
  trained: the frozen layer with autodiff of Keras's op and nothing else;
- `frozenbn`: `frozenbn.convert` (frozen, gamma/beta trained; the backend's
  native backward on TensorFlow and torch);
- `frozenbn_trainable_false`: frozenbn with gamma/beta frozen too (the
  same work as `keras_trainable_false`);
- `fused`: `frozenbn.fuse` of the frozenbn model (gamma/beta trained);
- `folded`: `frozenbn.fold` of the base, trained: no BN at all, the floor
  of any frozen-BN training step.
"""

import keras
import numpy as np

import frozenbn

NUM_CLASSES = 10


class _NaiveFrozenBN(keras.layers.BatchNormalization):
    """Keras BN always called in inference mode; gamma/beta stay trainable.

    Benchmark-only reference for "what a frozen layer costs without any
    optimisation": the moving statistics are used and never updated, and
    gamma/beta get gradients through autodiff of Keras's inference op.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def build_backbone(model_name: str, image_size: int) -> keras.Model:
    shape = (image_size, image_size, 3)
    if model_name == "resnet50":
        return keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=shape
        )
    if model_name == "mini":
        # A few conv-BN-ReLU blocks: for smoke tests, seconds to build.
        inputs = keras.Input(shape)
        x = inputs
        for i, filters in enumerate((8, 16)):
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"c{i}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, x, name="mini")
    raise ValueError(f"Unknown model: {model_name!r}")


def build_base(model_name: str, image_size: int, calib_x) -> keras.Model:
    """Backbone + linear head, BN statistics set from one calibration batch.

    With `weights=None` the moving statistics are 0/1 and the activations of
    a deep network in inference mode grow without bound; one pass in
    training mode with momentum 0 makes them those of a real batch, as a
    pretrained backbone's would be, and gamma/beta are perturbed so that
    exactness checks do not run on the identity.
    """
    backbone = build_backbone(model_name, image_size)
    inputs = keras.Input((image_size, image_size, 3))
    outputs = keras.layers.Dense(NUM_CLASSES, name="head")(backbone(inputs))
    model = keras.Model(inputs, outputs, name=f"{model_name}_finetune")
    bns = frozenbn._walk.batch_norm_layers(model)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(calib_x, training=True)
    rng = np.random.default_rng(1)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        bn.beta.assign(rng.normal(0.0, 0.1, n).astype("float32"))
    return model


def data(batch_size: int, image_size: int):
    """One fixed batch `(x, y)` as backend tensors (no host copies timed)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, image_size, image_size, 3))
    y = rng.integers(0, NUM_CLASSES, size=(batch_size,))
    return (
        keras.ops.convert_to_tensor(x.astype("float32")),
        keras.ops.convert_to_tensor(y.astype("int32")),
    )


def _clone(model, clone_function=None):
    copy = keras.models.clone_model(
        model, clone_function=clone_function, recursive=True
    )
    copy.set_weights(model.get_weights())
    return copy


def _bn_trainable_false(model):
    copy = _clone(model)
    for layer in frozenbn._walk.batch_norm_layers(copy):
        layer.trainable = False
    return copy


def _naive_frozen(model):
    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return _NaiveFrozenBN.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return _clone(model, clone)


def _frozenbn_trainable_false(model):
    copy = frozenbn.convert(model)
    for layer in frozenbn._walk.batch_norm_layers(copy):
        layer.trainable = False
    return copy


TRAIN_ARMS = {
    "stock": _clone,
    "keras_trainable_false": _bn_trainable_false,
    "naive_frozen": _naive_frozen,
    "frozenbn": frozenbn.convert,
    "frozenbn_trainable_false": _frozenbn_trainable_false,
    "fused": lambda model: frozenbn.fuse(frozenbn.convert(model))[0],
    "folded": lambda model: frozenbn.fold(model)[0],
}


def compile_model(model: keras.Model, optimizer: str) -> keras.Model:
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)
    else:
        opt = keras.optimizers.Adam(learning_rate=1e-5)
    # jit_compile is left at Keras's default ("auto") on purpose.
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model
