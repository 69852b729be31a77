"""`fold`: an inference copy with BatchNormalization folded into Conv/Dense."""

import dataclasses
import logging
from collections import Counter
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

import keras
import numpy as np

from frozenbn import _checks
from frozenbn import _clone
from frozenbn import _math
from frozenbn import _walk
from frozenbn.layers import BatchNormalization as _FrozenBN

logger = logging.getLogger(__name__)

# Output channels are the last kernel axis (HWIO, and Dense's (in, units)).
_OUT_LAST = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)
# Transposed convolutions store (*kernel_size, out, in).
_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
# Depthwise kernels are (*kernel_size, in, multiplier); output channel
# c * multiplier + m comes from kernel[..., c, m].
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
# Separable convolutions end in a pointwise (1, ..., in*mult, out) kernel.
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
FOLDABLE_TYPES = _OUT_LAST + _TRANSPOSE + _DEPTHWISE + _SEPARABLE
_BN_TYPES = (_walk.KERAS_BATCH_NORMALIZATION, _FrozenBN)


@dataclasses.dataclass
class FoldReport:
    """What `fold` folded and what it left, by layer name.

    Attributes:
        folded: `(layer_name, bn_name)` pairs: the BN layer `bn_name` was
            folded into `layer_name` and removed.
        left: `(bn_name, reason)` pairs for BN layers kept in the copy.
    """

    folded: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    left: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"Folded {len(self.folded)} BatchNormalization layer(s), "
            f"left {len(self.left)}."
        ]
        if self.folded:
            lines.append("Folded (layer <- batch norm):")
            lines += [f"  {layer} <- {bn}" for layer, bn in self.folded]
        if self.left:
            lines.append("Left in place (batch norm: reason):")
            lines += [f"  {bn}: {reason}" for bn, reason in self.left]
        return "\n".join(lines)


def fold(model: keras.Model) -> Tuple[keras.Model, FoldReport]:
    """Returns an inference copy of `model` with BN folded into its producer.

    In inference mode a BatchNormalization layer is the per-channel affine
    map `x * scale + bias` with `scale = gamma / sqrt(moving_variance +
    epsilon)` and `bias = beta - moving_mean * scale`. When it directly
    follows a linear layer, that map can be merged into the layer's kernel
    and bias, removing one pass over the activations. `fold` does this for
    every BN layer that

    - directly follows a `Conv1D`/`Conv2D`/`Conv3D`, `Conv1DTranspose`/
      `Conv2DTranspose`/`Conv3DTranspose`, `DepthwiseConv1D`/
      `DepthwiseConv2D`, `SeparableConv1D`/`SeparableConv2D` (folded into
      the pointwise kernel) or `Dense` layer (stock Keras classes, not
      quantized, no LoRA),
    - is that layer's output's only consumer (not shared with another
      branch or a model output), neither layer being called more than once,
    - with a linear activation in that layer (nothing in between),
    - and normalizes that layer's channel axis (`channels_first` handled).

    The layer is rebuilt with `use_bias=True` and the folded weights, and
    the BN disappears from the copy. Everything else is copied unchanged,
    including BN layers that cannot be folded; `FoldReport` says which were
    folded and why the others were left. The folding arithmetic is done in
    float64 (`frozenbn._math.fold_scale_bias`) and cast once to the
    layer's variable dtype. Works on Functional and Sequential models and
    recursively on the Functional and Sequential models nested in them.
    frozenbn's `BatchNormalization` folds like Keras's (whatever `frozen`
    says, inference uses the moving statistics).

    The copy computes what `model(x, training=False)` computes, up to
    float32 rounding (about 1e-6 relative). It is meant for inference and
    export only: the folded layers no longer have BN's training behaviour,
    so do not train it. `model` is not modified.

    Args:
        model: A built Functional or Sequential `keras.Model`.

    Returns:
        `(folded_model, report)`.

    Raises:
        TypeError: `model` is not a Functional or Sequential model (a
            subclassed model's structure lives in its Python code; rebuild
            it as a Functional model to fold it).
        ValueError: `model` is not built.

    Example:

    >>> import keras, frozenbn
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
    ...     keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU()])
    >>> folded, report = frozenbn.fold(model)
    >>> " -> ".join(type(layer).__name__ for layer in folded.layers)
    'Conv2D -> ReLU'
    >>> report.folded
    [('conv', 'bn')]
    """
    _checks.check_is_layer(model, "fold")
    if not _walk.is_graph_model(model):
        raise TypeError(
            "`frozenbn.fold` needs a Functional or Sequential model, whose "
            f"layer graph it can read. '{model.name}' is a "
            f"{type(model).__name__} (a subclassed model or a bare layer), "
            "whose structure lives in its Python code. Rebuild it as a "
            "Functional model (`keras.Model(inputs, outputs)`) to fold it."
        )
    _walk.check_built(model, "fold")
    folder, names = _Folder(), {}
    try:
        copy = folder.fold_model(model)
    except _clone.UncopyableLayer as error:
        # A layer whose config does not rebuild it (a `get_config` that
        # does not round-trip). Fold a private exact copy of the model
        # instead, reusing such layers from it: the result stays
        # independent of `model`.
        private, names = _private_copy(model, error)
        folder = _Folder(reuse_uncopyable=True)
        copy = folder.fold_model(private)
        model = private
    if folder.reused:
        logger.warning(
            "fold: reused layer(s) %s as they are (their configs do not "
            "rebuild them); the folded model works, but saving it to a "
            ".keras file will not load back until their `get_config` is "
            "fixed.",
            ", ".join(names.get(name, name) for name in folder.reused),
        )
    report = FoldReport(folded=folder.folded, left=folder.left)
    owners = _owners_in_graph(model)
    for bn in _walk.batch_norm_layers(model):
        if id(bn) in folder.handled:
            continue
        owner = owners.get(id(bn))
        if owner is None:
            reason = (
                "the model's graph never calls it (an unused sublayer); the "
                "folded copy does not contain it"
            )
        else:
            reason = (
                f"it is inside {type(owner).__name__} '{owner.name}', a "
                "custom layer whose calls fold cannot see; the layer is "
                "copied as it is"
            )
        report.left.append((bn.name, reason))
    if names:
        report = FoldReport(
            folded=[(names.get(a, a), names.get(b, b)) for a, b in report.folded],
            left=[(names.get(bn, bn), why) for bn, why in report.left],
        )
    logger.info(
        "fold: folded %d BN layer(s), left %d.",
        len(report.folded),
        len(report.left),
    )
    return copy, report


def _private_copy(model, error: Exception):
    """An exact copy of `model`, and `{copy's layer name: model's}`."""
    try:
        private, pairs = _clone.copy_model(model)
    except RuntimeError as copy_error:
        raise RuntimeError(
            f"`frozenbn.fold` cannot copy model '{model.name}': {error}, and "
            f"the model's own config does not copy it either ({copy_error}). "
            "Make the layer's `get_config` round-trip through `from_config`, "
            "or serve the model unfolded."
        ) from copy_error
    names = {
        pairs[id(layer)].name: layer.name
        for layer in _walk.iter_layers(model)
        if id(layer) in pairs
    }
    return private, names


def _owners_in_graph(model) -> dict:
    """`{id(layer): graph node that contains it}` for layers inside nodes.

    The nodes of a Functional or Sequential graph (recursively through
    nested graph models) are the layers the model calls; a sublayer of a
    custom node layer is reached only through that layer's own `call`.
    """
    owners = {}
    for op in _graph_operations(model):
        if _walk.is_graph_model(op):
            owners.update(_owners_in_graph(op))
        elif isinstance(op, keras.layers.Layer):
            for layer in _walk.iter_layers(op):
                owners.setdefault(id(layer), op)
    return owners


def _graph_operations(model) -> list:
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    return list(getattr(model, "_operations", []))


class _Folder:
    """Copies a model, folding BN layers; accumulates the report."""

    def __init__(self, reuse_uncopyable: bool = False):
        self.folded: List[Tuple[str, str]] = []
        self.left: List[Tuple[str, str]] = []
        self.handled = set()  # ids of BN layers decided on
        # Whether layers that their config does not rebuild are reused as
        # they are (when folding a private copy), and which were.
        self.reuse_uncopyable = reuse_uncopyable
        self.reused: List[str] = []

    def fold_model(self, model: keras.Model) -> keras.Model:
        if isinstance(model, keras.Sequential):
            pairs = self._plan_sequential(model)
        else:
            pairs = self._plan_functional(model)
        removed = {id(bn) for bn in pairs.values()}
        jobs = []  # (original layer, its copy)

        def clone(layer):
            if _walk.is_graph_model(layer):
                return self.fold_model(layer)
            if id(layer) in removed:
                # A placeholder that is never called: `call_fn` skips it.
                return _Removed(name=f"{layer.name}_folded")
            config = layer.get_config()
            if id(layer) in pairs:
                config["use_bias"] = True
            try:
                new = _clone.copy_layer(layer, config)
            except _clone.UncopyableLayer:
                if not self.reuse_uncopyable or id(layer) in pairs:
                    raise
                self.reused.append(layer.name)
                return layer
            if isinstance(layer, keras.layers.Layer):
                # Bare `keras.Operation` nodes (`x + 3.0`, `ops.pad`) have
                # no weights; their config is the whole copy.
                jobs.append((layer, new))
            return new

        if isinstance(model, keras.Sequential):
            copy = self._clone_sequential(model, clone, removed)
        else:

            def call_fn(op, *args, **kwargs):
                if isinstance(op, _Removed):
                    return args[0] if args else kwargs["inputs"]
                return op(*args, **kwargs)

            copy = keras.models.clone_model(
                model, clone_function=clone, call_function=call_fn
            )
        for layer, new in jobs:
            if id(layer) in pairs:
                _assign(new, _folded_weights(layer, pairs[id(layer)]))
            else:
                _clone.copy_weights(layer, new)
        return copy

    def _clone_sequential(self, model, clone, removed) -> keras.Sequential:
        layers = [
            clone(layer) for layer in model.layers if id(layer) not in removed
        ]
        first = model._layers[0] if model._layers else None
        if isinstance(first, keras.layers.InputLayer):
            inputs = keras.Input(
                batch_shape=first.batch_shape,
                dtype=first.output.dtype,
                name=first.name,
            )
        else:
            spec = model.inputs[0]
            inputs = keras.Input(batch_shape=spec.shape, dtype=spec.dtype)
        return keras.Sequential([inputs] + layers, name=model.name)

    # Planning: which (producer, BN) pairs to fold. Returns {id(P): bn}.

    def _plan_sequential(self, model) -> Dict[int, keras.layers.Layer]:
        layers = model.layers
        pairs = {}
        for i, bn in enumerate(layers):
            if not _walk.is_batch_norm(bn):
                continue
            self.handled.add(id(bn))
            if i == 0:
                self.left.append(
                    (bn.name, f"its input is the input of model '{model.name}'")
                )
                continue
            producer = layers[i - 1]
            shape = tuple(bn.input.shape) if _has_input(bn) else None
            reason = _why_not(
                producer, bn, shape, consumers=1, is_output=False, calls=(1, 1)
            )
            self._decide(producer, bn, reason, pairs)
        return pairs

    def _plan_functional(self, model) -> Dict[int, keras.layers.Layer]:
        # Deepest first is input-to-output order: the report reads in
        # the order of the model.
        by_depth = model._nodes_by_depth
        nodes = [
            node
            for depth in sorted(by_depth, reverse=True)
            for node in by_depth[depth]
            if not node.is_input
        ]
        calls = Counter(id(node.operation) for node in nodes)
        consumers = Counter()
        for node in nodes:
            for tensor in node.input_tensors:
                consumers[id(tensor)] += 1
        outputs = {id(t) for t in model.outputs}
        pairs = {}
        for node in nodes:
            bn = node.operation
            if not _walk.is_batch_norm(bn) or id(bn) in self.handled:
                continue
            self.handled.add(id(bn))
            x = node.arguments.args[0] if node.arguments.args else None
            history = getattr(x, "_keras_history", None)
            if history is None:
                self.left.append(
                    (bn.name, "its input is not a tensor of the model graph")
                )
                continue
            producer = history.operation
            if isinstance(producer, keras.layers.InputLayer):
                self.left.append(
                    (bn.name, f"its input is an input of model '{model.name}'")
                )
                continue
            reason = _why_not(
                producer,
                bn,
                tuple(x.shape),
                consumers=consumers[id(x)],
                is_output=id(x) in outputs,
                calls=(calls[id(producer)], calls[id(bn)]),
            )
            self._decide(producer, bn, reason, pairs)
        return pairs

    def _decide(self, producer, bn, reason, pairs) -> None:
        if reason is None and id(producer) in pairs:
            reason = f"'{producer.name}' is already folded with another BN"
        if reason is None:
            pairs[id(producer)] = bn
            self.folded.append((producer.name, bn.name))
        else:
            self.left.append((bn.name, reason))


def _why_not(
    producer, bn, output_shape, consumers, is_output, calls
) -> Optional[str]:
    """Why `bn` cannot be folded into `producer`, or None if it can."""
    rank = None if output_shape is None else len(output_shape)
    if type(bn) not in _BN_TYPES:
        return (
            f"custom BatchNormalization subclass {type(bn).__name__}, whose "
            "inference behaviour fold cannot assume"
        )
    name = f"{type(producer).__name__} '{producer.name}'"
    if not isinstance(producer, FOLDABLE_TYPES):
        return f"it follows {name}, not a Conv or Dense layer"
    if type(producer) not in FOLDABLE_TYPES:
        return (
            f"it follows {name}, a subclass of a foldable layer; fold "
            "rewrites only the stock Keras classes"
        )
    if getattr(producer, "quantization_mode", None) is not None:
        return f"{name} is quantized"
    if getattr(producer, "lora_enabled", False):
        return f"{name} has LoRA enabled; merge or disable LoRA first"
    activation = getattr(
        producer.activation, "__name__", str(producer.activation)
    )
    if activation != "linear":
        return f"{name} applies activation '{activation}' before the BN"
    if calls[0] != 1:
        return f"{name} is called {calls[0]} times in the model (shared)"
    if calls[1] != 1:
        return f"the BN is called {calls[1]} times in the model (shared)"
    if is_output:
        return f"the output of {name} is also a model output"
    if consumers != 1:
        return (
            f"the output of {name} has {consumers} consumers, not only the BN"
        )
    if rank is None:
        return "its input shape is unknown"
    channel_axis = _channel_axis(producer, rank)
    if bn.axis % rank != channel_axis:
        return (
            f"its axis {bn.axis} is not the channel axis ({channel_axis}) of "
            f"{name}"
        )
    if _bias_lands_on_last_axis(producer, output_shape):
        return (
            f"{name} is channels_first and its last spatial size equals its "
            "channel count; Keras's TensorFlow backend then adds a bias "
            "along the last axis (the `bias_add` shortcut in `ops.add`), so "
            "a folded bias would be misapplied"
        )
    return None


def _bias_lands_on_last_axis(layer, output_shape) -> bool:
    # keras/src/backend/tensorflow/numpy.py `add` turns `x + bias` into
    # `tf.nn.bias_add(..., "NHWC")` whenever x.shape[-1] equals the bias
    # length, even for a (1, C, 1, ...) channels_first bias (Keras 3.15).
    if keras.config.backend() != "tensorflow" or _channel_axis_is_last(layer):
        return False
    last = output_shape[-1] if output_shape else None
    return last is None or last == output_shape[1]


def _channel_axis_is_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _channel_axis(layer, rank: int) -> int:
    return rank - 1 if _channel_axis_is_last(layer) else 1


def _has_input(layer) -> bool:
    try:
        layer.input
    except (AttributeError, ValueError):
        return False
    return True


def _folded_weights(layer, bn) -> Dict[str, np.ndarray]:
    """The folded variables of `layer` (followed by `bn`), by name, float64."""

    def value(variable):
        return (
            None if variable is None else keras.ops.convert_to_numpy(variable)
        )

    scale, shift = _math.fold_scale_bias(
        value(bn.gamma),
        value(bn.beta),
        value(bn.moving_mean),
        value(bn.moving_variance),
        bn.epsilon,
    )
    scale = scale.astype(np.float64)
    shift = shift.astype(np.float64)
    bias = value(layer.bias) if layer.use_bias else np.zeros(scale.shape)
    folded = {"bias": bias.astype(np.float64) * scale + shift}
    if isinstance(layer, _SEPARABLE):
        folded["depthwise_kernel"] = value(layer.depthwise_kernel)
        folded["pointwise_kernel"] = value(layer.pointwise_kernel) * scale
    elif isinstance(layer, _DEPTHWISE):
        kernel = value(layer.kernel)
        folded["kernel"] = kernel * scale.reshape(kernel.shape[-2:])
    elif isinstance(layer, _TRANSPOSE):
        folded["kernel"] = value(layer.kernel) * scale[:, None]
    else:
        folded["kernel"] = value(layer.kernel) * scale
    return folded


def _assign(layer, values: Dict[str, np.ndarray]) -> None:
    variables = {v.name: v for v in layer.weights}
    if set(variables) != set(values):
        raise RuntimeError(
            f"Unexpected variables {sorted(variables)} in the copy of "
            f"'{layer.name}' (expected {sorted(values)}); please report this."
        )
    for name, variable in variables.items():
        variable.assign(np.asarray(values[name]).astype(variable.dtype))


class _Removed(keras.layers.Layer):
    """Stands for a folded BN while the copy's graph is built; never called."""

    def call(self, inputs):  # pragma: no cover - call_fn bypasses it
        return inputs
