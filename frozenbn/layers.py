"""Frozen-statistics BatchNormalization and the `Frozen` inference wrapper."""

import keras

_PACKAGE = "frozenbn"


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a Python bool (True or False). "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    return value


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras `BatchNormalization` with a `frozen` flag for fine-tuning.

    A drop-in subclass of `keras.layers.BatchNormalization`: it takes every
    argument of it, creates the same weights under the same names and writes
    the same config keys (plus `frozen`), so weights and checkpoints move
    between the two classes in both directions.

    With `frozen=False` it *is* Keras BatchNormalization, bit for bit, in
    training and in inference.

    With `frozen=True` the layer always normalizes with `moving_mean` and
    `moving_variance` and never updates them, whatever `training` says —
    inside `fit()`, `evaluate()`, `predict()` or a direct call. Its output is
    then exactly the output of stock Keras BN called with `training=False`
    (the same `keras.ops.batch_normalization` op on the same values).
    Unlike `trainable=False`, `frozen=True` keeps `gamma` and `beta`
    trainable: gradients flow to them and to the inputs, and the optimizer
    updates them. This is detectron2's `FrozenBatchNorm2d` with a learnable
    affine part, mmdet's `norm_eval=True`, or the TF Object Detection API's
    `FreezableBatchNorm(training=False)`.

    `frozen` and `trainable` are independent:

    | `frozen` | `trainable` | statistics in `fit()` | gamma/beta |
    |---|---|---|---|
    | False | True | batch statistics, moving averages updated | trained |
    | False | False | moving statistics (Keras rule) | frozen |
    | True | True | moving statistics, never updated | trained |
    | True | False | moving statistics, never updated | frozen |

    So the classic Keras recipe `backbone.trainable = True` (unfreeze the
    backbone to fine-tune it) does not unfreeze the statistics; only
    `layer.frozen = False` (or `frozenbn.unfreeze(model)`) does.

    `frozen` is a settable attribute. Like `trainable`, its value is read
    when Keras traces the train/predict functions, so after changing it on a
    compiled model call `model.compile(...)` again (or
    `model.make_train_function(force=True)`) before the next `fit()`.
    Eager calls see the change at once.

    Under a mixed-precision policy the layer computes in float32 and casts
    the result to the compute dtype, as Keras BN does.

    Args:
        frozen: Python bool. If `True`, normalize with the moving statistics
            in every mode and never update them. Defaults to `False`.
        **kwargs: every argument of `keras.layers.BatchNormalization`
            (`axis`, `momentum`, `epsilon`, `center`, `scale`, initializers,
            regularizers, constraints, `synchronized`, `renorm`,
            `renorm_clipping`, `renorm_momentum`) and base layer arguments
            such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any rank.
        training: Python bool. Ignored when `frozen=True`; otherwise as in
            Keras BN.
        mask: Optional mask, as in Keras BN.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> bn = frozenbn.BatchNormalization(frozen=True)
    >>> x = np.random.rand(4, 3).astype("float32")
    >>> train_out = bn(x, training=True)
    >>> infer_out = bn(x, training=False)
    >>> bool(np.array_equal(train_out, infer_out))
    True

    Reference:
        - [Ioffe and Szegedy, 2015](https://arxiv.org/abs/1502.03167).
        - [Wu and Johnson, 2021](https://arxiv.org/abs/2105.07576),
          "Rethinking 'Batch' in BatchNorm".
    """

    def __init__(self, *args, frozen=False, **kwargs):
        # `config_version` is written by `get_config` so that future versions
        # can migrate old configs; version 1 needs no migration.
        kwargs.pop("config_version", None)
        super().__init__(*args, **kwargs)
        self.frozen = frozen

    @property
    def frozen(self) -> bool:
        """Whether the layer always uses (and never updates) its statistics."""
        return self._frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self._frozen = _check_bool("frozen", value)

    def call(self, inputs, training=None, mask=None):
        if self.frozen:
            # The inference branch of Keras BN: moving statistics, no update,
            # and gamma/beta still differentiable through the same op.
            training = False
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update({"frozen": self.frozen, "config_version": 1})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Frozen(keras.layers.Wrapper):
    """Runs a layer or a whole sub-model in inference mode, weights trainable.

    `Frozen(backbone)` calls `backbone` with `training=False` whatever the
    outer `training` is: BatchNormalization layers normalize with their
    moving statistics and do not update them, Dropout is off. The wrapped
    weights keep their own `trainable` setting, so gamma/beta and kernels are
    still fine-tuned by `fit()`. This is the Keras transfer-learning guide's
    `base_model(x, training=False)` as a reusable, serializable layer that
    also works in `Sequential` models.

    With `frozen=False` the outer `training` value is passed through
    unchanged; `None` stays `None` (it is never forced to `True`, so
    validation inside `fit()` still runs in inference mode).

    Args:
        layer: A `keras.layers.Layer` or `keras.Model` to wrap.
        frozen: Python bool. Whether to force inference mode. Defaults to
            `True`. Settable; recompile after changing it on a compiled model.
        **kwargs: Base layer arguments such as `name`.

    Example:

    >>> import keras, frozenbn
    >>> backbone = keras.Sequential(
    ...     [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...      keras.layers.BatchNormalization()])
    >>> model = keras.Sequential(
    ...     [keras.Input((8, 8, 3)), frozenbn.Frozen(backbone),
    ...      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    >>> len(model.trainable_weights)  # conv kernel+bias, gamma, beta, dense
    6
    """

    def __init__(self, layer, frozen=True, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`frozenbn.Frozen` wraps a Keras layer or model. Received: "
                f"layer of type {type(layer).__name__}."
            )
        super().__init__(layer, **kwargs)
        self.frozen = frozen

    @property
    def frozen(self) -> bool:
        """Whether the wrapped layer is forced into inference mode."""
        return self._frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        self._frozen = _check_bool("frozen", value)

    def call(self, inputs, training=None):
        if not self.frozen:
            return self.layer(inputs, training=training)
        # Keras stores an explicit `training=False` in the call context that
        # is shared by the whole outer call, so layers called after this one
        # in a subclassed model would inherit it (Dropout silently off).
        # Restore the outer value once the wrapped layer has run.
        context = self._get_call_context()
        outer_training = context.get_value("training")
        try:
            return self.layer(inputs, training=False)
        finally:
            context.set_value("training", outer_training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["frozen"] = self.frozen
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # `Wrapper.from_config` pops "layer" from the dict it is given; work
        # on a copy so the caller's config stays intact.
        return super().from_config(dict(config), custom_objects=custom_objects)
