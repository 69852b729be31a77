"""The models of the scenario and the callbacks that watch them train.

- `build_backbone`: ResNet50 without its top, random or given weights, or
  a smaller residual network (that of `frozenbn demo --quick`, or one of
  20 BN layers).
- `pretrain_backbone`: a short source-domain training, then `recalibrate`,
  so the statistics are converged as after a long pretraining.
- `build_classifier`: the bug report's Sequential head on a backbone.
- `compile_model`: `compile`, with the step's variables created first.
- `fit_mode_loss`: the loss of given weights as `fit` normalizes them.
- `EvaluateOnTrainingData`, `EpochTimer`, `Progress`: callbacks.
"""

import os
import time
from typing import Optional

import keras
import numpy as np


_RESNETS = {
    # name: (filters of each stage, residual blocks per stage)
    "small": ((16, 32, 64), 1),  # 9 BN layers; `frozenbn demo --quick`
    "medium": ((32, 64, 128, 256), 2),  # 20 BN layers; a half-width ResNet-18
}

BACKBONES = ("resnet50",) + tuple(_RESNETS)
"""The scenario's backbones: Keras's ResNet50, and residual networks of
Conv-BN blocks that compile in seconds: "small" (for `frozenbn demo
--quick`) and "medium" (`benchmarks/results/demo/backbones.py`)."""


def build_backbone(weights: Optional[str], image_size: int,
                   architecture: str = "resnet50") -> keras.Model:
    """A feature extractor without a classification top.

    Args:
        weights: `None`/`"none"` (random init), `"imagenet"` (downloaded by
            Keras, or read from its cache), or a local weights file; only
            ResNet50 takes weights.
        image_size: Side of the square RGB input (at least 32).
        architecture: One of `BACKBONES`. Defaults to `"resnet50"`.

    Returns:
        The backbone model.
    """
    if architecture not in BACKBONES:
        raise ValueError(f"architecture must be one of {BACKBONES}, "
                         f"got {architecture!r}")
    if weights in (None, "none"):
        weights = None
    elif architecture != "resnet50":
        raise ValueError(f"weights are for ResNet50; the {architecture!r} "
                         "backbone takes weights=None")
    elif weights != "imagenet" and not os.path.isfile(weights):
        raise FileNotFoundError(f"ResNet50 weights file not found: {weights}")
    if architecture in _RESNETS:
        return _resnet(image_size, *_RESNETS[architecture],
                       name=f"{architecture}_resnet")
    return keras.applications.ResNet50(
        weights=weights, include_top=False,
        input_shape=(image_size, image_size, 3),
    )


def backbone_name(architecture: str) -> str:
    """How tables and messages name a backbone of `BACKBONES`."""
    return {"resnet50": "ResNet50"}.get(architecture,
                                        f"a {architecture} ResNet")


def _resnet(image_size: int, widths, blocks: int, name: str) -> keras.Model:
    layers = keras.layers

    def conv_bn(x, filters, strides=1, kernel=3):
        x = layers.Conv2D(filters, kernel, strides, padding="same",
                          use_bias=False)(x)
        return layers.BatchNormalization()(x)

    inputs = keras.Input((image_size, image_size, 3))
    x = layers.ReLU()(conv_bn(inputs, widths[0]))
    for stage, width in enumerate(widths):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != width:
                shortcut = conv_bn(x, width, strides, kernel=1)
            y = layers.ReLU()(conv_bn(x, width, strides))
            x = layers.ReLU()(layers.Add()([shortcut, conv_bn(y, width)]))
    return keras.Model(inputs, x, name=name)


def pretrain_backbone(
    backbone: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    verbose: int = 1,
) -> dict:
    """Trains `backbone` briefly on the source domain, then recalibrates.

    A softmax head over the source classes on global-average-pooled
    features is trained for `epochs` with Adam; then the backbone's BN
    statistics are set to their exact population values on the source
    images with `frozenbn.recalibrate`: the converged state of a long
    pretraining run (a few epochs of momentum 0.99 leave them half at
    their initial 0/1).

    Args:
        backbone: The backbone, trained in place.
        x: Source images, preprocessed.
        y: Integer source labels.
        epochs: Training epochs; 0 only recalibrates.
        batch_size: Batch size.
        learning_rate: Adam learning rate.
        seed: Seed of the head and the shuffling.
        verbose: 0 or 1.

    Returns:
        `{"accuracy": ...}`: the last epoch's training accuracy (`None`
        for 0 epochs).
    """
    from frozenbn.recalibrate import recalibrate

    accuracy = None
    if epochs > 0:
        keras.utils.set_random_seed(seed)
        classes = int(np.max(y)) + 1
        model = keras.Sequential([
            keras.Input(x.shape[1:]), backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ])
        compile_model(model, keras.optimizers.Adam(learning_rate),
                      "sparse_categorical_crossentropy", x, y, batch_size)
        history = model.fit(x, y, batch_size=batch_size, epochs=epochs,
                            verbose=0, callbacks=[Progress(epochs, verbose)])
        accuracy = float(history.history["accuracy"][-1])
    recalibrate(backbone, x, verbose=0, batch_size=batch_size)
    return {"accuracy": accuracy}


def build_classifier(backbone: keras.Model, seed: int = 0) -> keras.Model:
    """The bug report's Sequential head on `backbone`, seeded.

    Args:
        backbone: A feature extractor with a 4D output.
        seed: Seed of the head's initial weights.

    Returns:
        `Sequential([backbone, GAP, Dense 64 relu, Dropout .5, Dense 64,
        Dropout .5, Dense 1 sigmoid])`.
    """
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(backbone.input_shape[1:]),
        backbone,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(64),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(1, activation="sigmoid"),
    ], name="classifier")


def compile_model(model: keras.Model, optimizer, loss: str, x, y,
                  batch_size: int) -> None:
    """Compiles `model` with `accuracy`, then creates the variables that
    `fit`'s first step would: the optimizer's and the metrics'.

    TensorFlow traces a step again when its first trace created variables;
    for ResNet50 on a CPU that second trace of `fit`'s step costs seconds.
    With the variables made first (the optimizer built on the trainable
    variables, one `evaluate` of the first batch of `(x, y)` for the
    metrics, which also traces the evaluation step at `batch_size`), the
    step traces once. Nothing trains: the values are those `fit` creates.
    On JAX and torch, `fit` then no longer draws a batch to build the
    metrics, so its shuffling and Dropout take another random stream.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    >>> compile_model(model, keras.optimizers.Adam(), "mse", x, y, 2)
    >>> model.optimizer.built, len(model.optimizer.variables)
    (True, 6)
    """
    model.compile(optimizer, loss, metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    model.evaluate(x[:batch_size], y[:batch_size], batch_size=batch_size,
                   verbose=0)


def keras_layers(model: keras.Model):
    """Every layer of `model` and of the models nested in it, in order: what
    a Keras user loops over to set `rate` or `trainable` on some of them."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from keras_layers(layer)


def fit_mode_loss(model: keras.Model, x, y, batch_size: int = 32) -> float:
    """Binary cross-entropy of `model` on `(x, y)` as `fit` normalizes.

    `fit`'s loss for an epoch is a mean over steps while the weights move,
    with Dropout on; `evaluate` scores the final weights with the moving
    statistics. This scores the same weights as `evaluate`, over the same
    batches, with `training=True` for normalization (every BN layer that
    `fit` runs on batch statistics uses the batch's; frozen ones use their
    moving statistics) and Dropout off, so `evaluate`'s loss over this one
    is the part of the gap that the statistics alone make. The model's
    Dropout rates and non-trainable variables (the moving statistics that
    `training=True` updates) are restored afterwards.

    Args:
        model: A compiled-or-not model with one sigmoid output.
        x: Inputs.
        y: 0/1 labels.
        batch_size: Batch size, as `evaluate`'s. Defaults to 32.

    Returns:
        The mean loss over all samples.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((2,)),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.Dense(1, activation="sigmoid"),
    ... ])
    >>> x, y = np.full((4, 2), 5.0, "float32"), np.ones(4, "float32")
    >>> round(fit_mode_loss(model, x, y), 4)  # batch statistics: all 0, ln 2
    0.6931
    """
    dropouts = [layer for layer in keras_layers(model)
                if isinstance(layer, keras.layers.Dropout)]
    rates = [layer.rate for layer in dropouts]
    state = [keras.ops.convert_to_numpy(v)
             for v in model.non_trainable_variables]
    losses = []
    try:
        for layer in dropouts:
            layer.rate = 0.0
        for start in range(0, len(x), batch_size):
            labels = np.asarray(y[start:start + batch_size], "float32")
            outputs = model(x[start:start + batch_size], training=True)
            losses.append(keras.ops.convert_to_numpy(
                keras.losses.binary_crossentropy(labels[:, None], outputs)))
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
        for variable, value in zip(model.non_trainable_variables, state):
            variable.assign(value)
    return float(np.mean(np.concatenate(losses)))


class EvaluateOnTrainingData(keras.callbacks.Callback):
    """Evaluates the model on its training data after every epoch.

    Adds `eval_loss` and `eval_accuracy` (inference mode: moving BN
    statistics, no dropout) to the epoch logs, next to the `loss` that
    `fit()` reports for the same images, so `History` records both curves.

    Args:
        x: Training images.
        y: Training labels.
        batch_size: Evaluation batch size. Defaults to 32.
    """

    def __init__(self, x, y, batch_size: int = 32):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        scores = self.model.evaluate(self.x, self.y, verbose=0,
                                     batch_size=self.batch_size,
                                     return_dict=True)
        logs["eval_loss"] = float(scores["loss"])
        logs["eval_accuracy"] = float(scores.get("accuracy", np.nan))


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch in `seconds`."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class Progress(keras.callbacks.Callback):
    """A Keras progress bar over epochs, with the latest losses."""

    def __init__(self, epochs: int, verbose: int):
        super().__init__()
        self.verbose = verbose
        self.epochs_done = 0
        self.bar = keras.utils.Progbar(
            epochs, verbose=verbose, unit_name="epoch",
            stateful_metrics=["loss", "eval_loss"],
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = [(k, logs[k]) for k in ("loss", "eval_loss") if k in logs]
        self.epochs_done = epoch + 1
        self.bar.update(self.epochs_done, values=values)

    def on_train_end(self, logs=None):
        # Early stopping ends before the last epoch: close the bar there
        # ("11/12"), not at an epoch that never ran.
        if self.verbose and self.epochs_done < self.bar.target:
            self.bar.update(self.epochs_done, finalize=True)
