"""Frozen-statistics BatchNormalization and the `Frozen` inference wrapper."""

import contextlib
import contextvars
import numbers
from typing import Any
from typing import Iterator
from typing import Optional

import keras

from frozenbn import _checks
from frozenbn import _native

_PACKAGE = "frozenbn"

# Keras's own class, taken at import.
KERAS_BATCH_NORMALIZATION = keras.layers.BatchNormalization

# Inside a `frozenbn.patch(frozen=...)` block (per thread and context): that
# `frozen` value, which Keras BatchNormalization constructions build
# frozenbn layers with and which frozenbn layers built without one take.
# `None` outside any block: Keras builds its own class, and frozenbn layers
# default to `frozen=False`.
DEFAULT_FROZEN = contextvars.ContextVar("frozenbn_default_frozen", default=None)


@contextlib.contextmanager
def keras_classes() -> Iterator[None]:
    """Within the block, Keras BatchNormalization builds Keras's own class.

    frozenbn's tools copy layers from their configs; inside a user's
    `frozenbn.patch` block they must still get the class they copy.
    """
    token = DEFAULT_FROZEN.set(None)
    try:
        yield
    finally:
        DEFAULT_FROZEN.reset(token)


def _frozen_property(doc: str) -> property:
    """The settable, validated `frozen` flag of both frozenbn layers."""

    def get(self) -> bool:
        return self._frozen

    def set(self, value: bool) -> None:
        self._frozen = _checks.check_bool("frozen", value)

    return property(get, set, doc=doc)


# The version of the configs that `get_config` writes. A config without one
# predates versioning and means version 1; a newer version than this one was
# written by a newer frozenbn, whose meaning this version cannot know.
CONFIG_VERSION = 1


def _check_config_version(class_name: str, version) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"Invalid `config_version` {version!r} in a {class_name} config; "
            "expected a positive int written by frozenbn."
        )
    if version > CONFIG_VERSION:
        raise ValueError(
            f"This {class_name} config has config_version {version}, written "
            "by a newer frozenbn; this version reads configs up to version "
            f"{CONFIG_VERSION}. Upgrade frozenbn (pip install -U frozenbn) "
            "to load it."
        )


def _check_axis(axis) -> None:
    # Keras's own `int(axis)` would fail with a message that never names
    # `axis` for a list, and would silently truncate `axis=1.5`.
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(
            "`axis` must be an int: Keras 3 BatchNormalization normalizes one "
            "channel axis (Keras 2's list form is gone; for several axes use "
            "keras.layers.LayerNormalization or GroupNormalization). "
            f"Received: axis={axis!r}"
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BatchNormalization(KERAS_BATCH_NORMALIZATION):
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
    `layer.frozen = False` (or `frozenbn.unfreeze(model)`) does. `frozen` is
    settable; recompile a compiled model after changing it. docs/api.md
    says how the gradients of a frozen layer are computed.

    Args:
        frozen: Python bool. If `True`, normalize with the moving statistics
            in every mode and never update them. Defaults to `False` (inside
            a `frozenbn.patch(frozen=...)` block: that block's value).
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
    >>> bool(np.array_equal(keras.ops.convert_to_numpy(train_out),
    ...                      keras.ops.convert_to_numpy(infer_out)))
    True

    Reference:
        - [Ioffe and Szegedy, 2015](https://arxiv.org/abs/1502.03167).
        - [Wu and Johnson, 2021](https://arxiv.org/abs/2105.07576),
          "Rethinking 'Batch' in BatchNorm".
    """

    def __init__(
        self, *args: Any, frozen: Optional[bool] = None, **kwargs: Any
    ) -> None:
        _check_config_version(type(self).__name__, kwargs.pop("config_version", 1))
        _check_axis(kwargs.get("axis", args[0] if args else -1))
        super().__init__(*args, **kwargs)
        self.frozen = bool(DEFAULT_FROZEN.get()) if frozen is None else frozen

    frozen = _frozen_property(
        "Whether the layer always uses (and never updates) its statistics."
    )

    def call(self, inputs, training=None, mask=None):
        if not self.frozen:
            return super().call(inputs, training=training, mask=mask)
        layout = None if mask is not None else self._fused_gradient_layout(
            inputs
        )
        if layout is not None:
            return self._frozen_call_fused_gradient(inputs, layout)
        # The inference branch of Keras BN: moving statistics, no update,
        # and gamma/beta still differentiable through the same op.
        return super().call(inputs, training=False, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update({"frozen": self.frozen, "config_version": CONFIG_VERSION})
        return config

    @classmethod
    def from_config(cls, config):
        # Checked here too: Keras wraps errors raised in `__init__` into a
        # generic deserialization `TypeError`.
        config = dict(config)
        _check_config_version(cls.__name__, config.pop("config_version", 1))
        return super().from_config(config)

    # Whether frozen calls may take their gradient from TensorFlow's fused
    # kernel. A private switch for tests and benchmarks: `False` leaves the
    # gradient to autodiff of Keras's op (the outputs are the same).
    _use_fused_gradient = True

    def _fused_gradient_layout(self, inputs):
        """`"last"`, `"first"` or None: whether and how to fuse the gradient.

        The fused gradient kernels (TensorFlow's `FusedBatchNormGradV2` and
        torch's `native_batch_norm_backward`, in inference mode) take float32
        data with one channel axis, so channels-last inputs of any rank are
        viewed as `(-1, C)` and 4D channels-first inputs taken as they are
        (TensorFlow transposes them).
        It pays off only when gamma or beta is trained: otherwise autodiff
        computes the gradient of `inputs` alone, which is less work. On
        torch it also needs autograd to be recording: `predict` and
        `evaluate` run under `torch.no_grad()`, where the plain op is the same
        forward without the `autograd.Function`'s overhead.
        """
        if not self._use_fused_gradient or self.renorm:
            return None
        if not _native.records_gradients():
            return None
        if not (self.trainable and (self.scale or self.center)):
            return None
        if keras.backend.result_type(inputs.dtype, "float32") != "float32":
            return None  # float64 stays on the exact path
        ndim = len(inputs.shape)
        if ndim < 2 or inputs.shape[self.axis] is None:
            return None
        axis = self.axis % ndim
        if axis == ndim - 1:
            return "last"
        if axis == 1 and ndim == 4:
            return "first"
        return None

    def _frozen_call_fused_gradient(self, inputs, layout):
        # As in Keras BN: float16/bfloat16 inputs are computed in float32.
        outputs = _native.frozen_batch_norm(
            keras.ops.cast(inputs, "float32"),
            keras.ops.cast(self.gamma, "float32") if self.scale else None,
            keras.ops.cast(self.beta, "float32") if self.center else None,
            keras.ops.cast(self.moving_mean, "float32"),
            keras.ops.cast(self.moving_variance, "float32"),
            axis=self.axis,
            epsilon=self.epsilon,
            layout=layout,
        )
        return keras.ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Frozen(keras.layers.Wrapper):
    """Runs a layer or a whole sub-model in inference mode, weights trainable.

    `Frozen(backbone)` calls `backbone` with `training=False` whatever the
    outer `training` is: BatchNormalization layers normalize with their
    moving statistics and do not update them, Dropout is off. The wrapped
    weights keep their own `trainable` setting, so gamma/beta and kernels are
    still fine-tuned by `fit()`. This is what the Keras transfer-learning
    guide's `base_model(x, training=False)` means, as a reusable,
    serializable layer that also works in `Sequential` models, and one that
    holds in `fit`: Keras 3 replaces a `training=False` recorded in a
    Functional graph with `fit`'s `training=True` (measured with Keras
    3.15), while the wrapper passes `training=False` from inside its own
    call.

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

    def __init__(
        self, layer: keras.layers.Layer, frozen: bool = True, **kwargs: Any
    ) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "`frozenbn.Frozen` wraps a Keras layer or model. Received: "
                f"layer of type {type(layer).__name__}."
            )
        super().__init__(layer, **kwargs)
        self.frozen = frozen

    frozen = _frozen_property(
        "Whether the wrapped layer is forced into inference mode."
    )

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
        config.update({"frozen": self.frozen, "config_version": CONFIG_VERSION})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # `Wrapper.from_config` pops "layer" from the dict it is given; work
        # on a copy so the caller's config stays intact.
        config = dict(config)
        _check_config_version(cls.__name__, config.pop("config_version", 1))
        return super().from_config(config, custom_objects=custom_objects)
