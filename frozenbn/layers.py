"""The frozenbn layers: `BatchNormalization` with frozen statistics, and the
`Frozen` wrapper; the layers that convert, fuse and the other tools act on.
"""

import contextlib
import contextvars
import numbers
from typing import Any
from typing import Iterator
from typing import Optional

import keras

from frozenbn import _checks
from frozenbn import _keras_private
from frozenbn._backend import native

_PACKAGE = "frozenbn"

# Keras's own class, taken at import.
KERAS_BATCH_NORMALIZATION = keras.layers.BatchNormalization

# The `frozen` of the enclosing `frozenbn.patch` block (per thread and
# context); `None` outside one: Keras BN builds Keras's own class.
DEFAULT_FROZEN = contextvars.ContextVar("frozenbn_default_frozen", default=None)


@contextlib.contextmanager
def keras_classes() -> Iterator[None]:
    """Keras BN builds Keras's class here, even in `patch` (for copies)."""
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


# The config version `get_config` writes; a config without one is version 1.
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
    # Keras's `int(axis)` truncates 1.5 and does not name `axis` for a list.
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

    A drop-in subclass with the same arguments, weights and config keys (plus
    `frozen`), so checkpoints load in both directions. `frozen=False` is
    Keras BN, bit for bit. `frozen=True` always normalizes with the moving
    statistics and never updates them, whatever `training` says, so `fit`
    computes what `evaluate` does; unlike `trainable=False`, gamma and beta
    still train. `backbone.trainable = True` does not unfreeze the
    statistics; `layer.frozen = False` does (recompile after changing it).

    Args:
        frozen: Python bool. If `True`, normalize with the moving statistics
            in every mode and never update them. Defaults to `False` (inside
            a `frozenbn.patch(frozen=...)` block: that block's value).
        **kwargs: Every argument of `keras.layers.BatchNormalization`, and
            base layer arguments such as `name` and `dtype`.

    Call arguments:
        inputs: Input tensor of any rank.
        training: Ignored when `frozen=True`; otherwise as in Keras BN.
        mask: Optional mask, as in Keras BN.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> bn = frozenbn.BatchNormalization(frozen=True)
    >>> x = np.random.rand(4, 3).astype("float32")
    >>> fit, evaluate = (keras.ops.convert_to_numpy(bn(x, training=t))
    ...                  for t in (True, False))
    >>> bool(np.array_equal(fit, evaluate))
    True

    Reference:
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
        # Keras BN's inference branch; gamma/beta stay differentiable.
        return super().call(inputs, training=False, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update({"frozen": self.frozen, "config_version": CONFIG_VERSION})
        return config

    @classmethod
    def from_config(cls, config):
        # Here too: Keras wraps `__init__` errors in a generic TypeError.
        config = dict(config)
        _check_config_version(cls.__name__, config.pop("config_version", 1))
        return super().from_config(config)

    # Private switch for tests and benchmarks: `False` leaves the frozen
    # gradient to autodiff of Keras's op instead of the fused kernel.
    _use_fused_gradient = True

    def _fused_gradient_layout(self, inputs):
        """`"last"`, `"first"` or None: how the fused gradient kernel fits.

        The kernels take float32 channels-last or 4D channels-first data; they
        pay off only while gamma or beta trains and gradients are recorded.
        """
        if not self._use_fused_gradient or self.renorm:
            return None
        if not native.records_gradients():
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
        outputs = native.frozen_batch_norm(
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
    outer `training`: BN uses its moving statistics and Dropout is off, while
    the wrapped weights keep their own `trainable` flags. It is the Keras
    transfer-learning guide's `base_model(x, training=False)` as a
    serializable layer, and one that holds in `fit`, where Keras 3 overrides
    a `training=False` recorded in a Functional graph.

    Args:
        layer: A `keras.layers.Layer` or `keras.Model` to wrap.
        frozen: Python bool. Whether to force inference mode; `False` passes
            the outer `training` through (`None` stays `None`). Defaults to
            `True`. Settable; recompile a compiled model after changing it.
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
        with _keras_private.outer_training_kept(self):
            return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"frozen": self.frozen, "config_version": CONFIG_VERSION})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # A copy: `Wrapper.from_config` pops "layer" from the caller's dict.
        config = dict(config)
        _check_config_version(cls.__name__, config.pop("config_version", 1))
        return super().from_config(config, custom_objects=custom_objects)
