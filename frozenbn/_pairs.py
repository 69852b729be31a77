"""Which (linear layer, BN) pairs `fold` and `fuse` make one layer, and why not.

`Rewriter` decides and rewrites the model through `frozenbn._graph`;
`RewriteReport` says in one shape what a tool did.
"""

import dataclasses
import warnings
from collections import Counter
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional
from typing import Tuple

import keras

from frozenbn import _checks
from frozenbn import _graph
from frozenbn import _keras_private
from frozenbn import _walk
from frozenbn._backend import native

# Output channels are the last kernel axis (HWIO, and Dense's (in, units)).
OUT_LAST = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)
# Transposed convolutions store (*kernel_size, out, in).
TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
# Depthwise kernels are (*kernel_size, in, multiplier); output channel
# c * multiplier + m comes from kernel[..., c, m].
DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
# Separable convolutions end in a pointwise (1, ..., in*mult, out) kernel.
SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
LINEAR_TYPES = OUT_LAST + TRANSPOSE + DEPTHWISE + SEPARABLE


def scaled_kernel(layer) -> tuple:
    """`(kernel, shape)`: the kernel of `layer` that holds its output
    channels, and the shape a per-output-channel vector takes to multiply
    it (the one kernel-layout rule of `fold` and `fuse`)."""
    if isinstance(layer, SEPARABLE):
        return layer.pointwise_kernel, (-1,)
    if isinstance(layer, DEPTHWISE):
        return layer.kernel, tuple(layer.kernel.shape[-2:])
    if isinstance(layer, TRANSPOSE):
        return layer.kernel, (-1, 1)
    return layer.kernel, (-1,)

# What a BN layer's check returns: a reason to leave it, or None.
PairCheck = Callable[[keras.layers.Layer, keras.layers.Layer], Optional[str]]
Pair = Tuple[str, str]


@dataclasses.dataclass
class RewriteReport:
    """What `fold`, `fuse` or `unfuse` did with each BatchNormalization.

    Layers are named by their path from the model down
    (`"model/block/conv"`), so equal names in nested models stay apart.

    Attributes:
        tool: `"fold"`, `"fuse"` or `"unfuse"`.
        pairs: `(layer_path, bn_path)`: a linear layer and the BN layer
            after it that `fold` or `fuse` made one layer, or that `unfuse`
            split apart again.
        left: `(bn_path, reason)`: BN layers kept as they were, and why.
    """

    tool: str
    pairs: List[Pair] = dataclasses.field(default_factory=list)
    left: List[Pair] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        verb = {"fold": "Folded", "fuse": "Fused"}.get(self.tool, "Unfused")
        lines = [f"{verb} {len(self.pairs)} BatchNormalization layer(s), "
                 f"left {len(self.left)}."]
        if self.pairs:
            lines.append(f"{verb} (layer <- batch norm):")
            lines += [f"  {layer} <- {bn}" for layer, bn in self.pairs]
        if self.left:
            lines.append("Left in place (batch norm: reason):")
            lines += [f"  {bn}: {reason}" for bn, reason in self.left]
        return "\n".join(lines)

    @property
    def folded(self) -> List[Pair]:
        """Deprecated: `pairs`."""
        return self._renamed("folded")

    @property
    def fused(self) -> List[Pair]:
        """Deprecated: `pairs`."""
        return self._renamed("fused")

    def _renamed(self, old: str) -> List[Pair]:
        warnings.warn(f"`report.{old}` is now `report.pairs` (layer paths, "
                      f"not names); `{old}` goes in frozenbn 0.3.",
                      DeprecationWarning, stacklevel=3)
        return self.pairs


class Rewriter:
    """Copies a model with each qualifying (layer, BN) pair made one layer.

    Args:
        tool: The public function's name, for the reasons in the report.
        check: Optional `check(layer, bn)`: the tool's own reason to leave
            `bn` (for example "not frozen"), or None. Asked after the BN
            class and before the producing layer is checked.
        replace: `replace(layer, bn)`: the layer that stands for the pair
            in the copy.
        finish: `finish(layer, bn, new)`, called once the copy is built
            (to set `new`'s weights), or None.
    """

    def __init__(
        self,
        tool: str,
        check: Optional[PairCheck],
        replace: Callable,
        finish: Optional[Callable] = None,
    ):
        self.tool = tool
        self.check = check
        self.replace = replace
        self.finish = finish
        self.paired: List[Pair] = []
        self.left: List[Pair] = []
        self.handled = set()  # ids of BN layers decided on
        self._replaced = []  # (layer, bn, new) for `finish`

    def rewrite(self, model: keras.Model) -> keras.Model:
        """The copy of `model`; `paired`/`left` say what became of each BN,
        by path in `model`."""
        copy, model, rename = _graph.rewrite(model, self.tool, self._start)
        if self.finish is not None:
            for layer, bn, new in self._replaced:
                self.finish(layer, bn, new)
        merged = {
            id(layer.batch_norm): layer.name
            for layer in _keras_private.iter_layers(model)
            if getattr(layer, "merges_batch_norm", False)
        }
        owners = _graph.owners_in_graph(model)
        paths = _walk.paths(model)
        for bn in _walk.batch_norm_layers(model):
            if id(bn) in merged:
                reason = (
                    f"already fused into '{merged[id(bn)]}' by frozenbn.fuse "
                    "(frozenbn.unfuse separates it again)"
                )
            elif id(bn) in self.handled:
                continue
            elif id(bn) in owners:
                owner = owners[id(bn)]
                reason = (
                    f"it is inside {type(owner).__name__} '{owner.name}', a "
                    f"custom layer whose calls {self.tool} cannot see; the "
                    "layer is copied as it is"
                )
            else:
                reason = (
                    "the model's graph never calls it (an unused sublayer); "
                    "the copy does not contain it"
                )
            self.left.append((paths.get(id(bn), bn.name), reason))
        self.paired = [(rename(a), rename(b)) for a, b in self.paired]
        self.left = [(rename(bn), why) for bn, why in self.left]
        if not self.paired:
            why = (f"none of its {len(self.left)} BatchNormalization layer(s) "
                   f"qualifies ('{self.left[0][0]}': {self.left[0][1]}; the "
                   "report gives each)" if self.left
                   else _checks.nothing_selected(0))
            _checks.warn_unchanged(self.tool, why, "a plain copy", stacklevel=3)
        return copy

    def _start(self):
        """A new attempt: nothing decided yet; returns the plan."""
        self.paired, self.left, self.handled, self._replaced = [], [], set(), []
        return self._plan

    def _plan(self, model, path):
        """`replace(operation)` for one graph model: each paired producer
        becomes `self.replace(layer, bn)`, its BN is removed."""
        if isinstance(model, keras.Sequential):
            pairs = self._plan_sequential(model, path)
        else:
            pairs = self._plan_functional(model, path)
        removed = {id(bn) for bn in pairs.values()}

        def replace(layer):
            if id(layer) in removed:
                return _graph.Removed(name=f"{layer.name}_removed")
            if id(layer) not in pairs:
                return None
            new = self.replace(layer, pairs[id(layer)])
            self._replaced.append((layer, pairs[id(layer)], new))
            return new

        return replace

    # Planning: which (producer, BN) pairs to rewrite. Returns {id(P): bn}.

    def _plan_sequential(self, model, path) -> Dict[int, keras.layers.Layer]:
        layers = model.layers
        pairs = {}
        for i, bn in enumerate(layers):
            if not _walk.is_batch_norm(bn):
                continue
            self.handled.add(id(bn))
            if i == 0:
                self.left.append((f"{path}/{bn.name}", f"its input is the "
                                  f"input of model '{model.name}'"))
                continue
            producer = layers[i - 1]
            shape = tuple(bn.input.shape) if _has_input(bn) else None
            reason = self._why_not(
                producer, bn, shape, consumers=1, is_output=False, calls=(1, 1)
            )
            self._decide(producer, bn, reason, pairs, path)
        return pairs

    def _plan_functional(self, model, path) -> Dict[int, keras.layers.Layer]:
        # Input-to-output order: the report reads in the order of the model.
        nodes = _keras_private.graph_nodes(model)
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
            producer = _keras_private.producer(x)
            if producer is None:
                self.left.append((f"{path}/{bn.name}",
                                  "its input is not a tensor of the model graph"))
                continue
            if isinstance(producer, keras.layers.InputLayer):
                self.left.append((f"{path}/{bn.name}", f"its input is an "
                                  f"input of model '{model.name}'"))
                continue
            reason = self._why_not(
                producer,
                bn,
                tuple(x.shape),
                consumers=consumers[id(x)],
                is_output=id(x) in outputs,
                calls=(calls[id(producer)], calls[id(bn)]),
            )
            self._decide(producer, bn, reason, pairs, path)
        return pairs

    def _decide(self, producer, bn, reason, pairs, path) -> None:
        if reason is None and id(producer) in pairs:
            reason = f"'{producer.name}' is already paired with another BN"
        if reason is None:
            pairs[id(producer)] = bn
            self.paired.append((f"{path}/{producer.name}", f"{path}/{bn.name}"))
        else:
            self.left.append((f"{path}/{bn.name}", reason))

    def _why_not(
        self, producer, bn, output_shape, consumers, is_output, calls
    ) -> Optional[str]:
        """Why `bn` cannot be merged into `producer`, or None if it can."""
        reason = _walk.custom_batch_norm_reason(bn)
        if reason is not None:
            return reason
        reason = self.check(producer, bn) if self.check else None
        if reason is not None:
            return reason
        return _why_not_producer(
            self.tool, producer, bn, output_shape, consumers, is_output, calls
        )


def _why_not_producer(
    tool, producer, bn, output_shape, consumers, is_output, calls
) -> Optional[str]:
    rank = None if output_shape is None else len(output_shape)
    name = f"{type(producer).__name__} '{producer.name}'"
    if not isinstance(producer, LINEAR_TYPES):
        return f"it follows {name}, not a Conv or Dense layer"
    if type(producer) not in LINEAR_TYPES:
        return (
            f"it follows {name}, a subclass of a Conv or Dense layer; "
            f"{tool} rewrites only the stock Keras classes"
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
            "a merged bias would be misapplied"
        )
    return None


def _bias_lands_on_last_axis(layer, output_shape) -> bool:
    if not native.BIAS_ADD_ON_LAST_AXIS or channel_axis_is_last(layer):
        return False
    last = output_shape[-1] if output_shape else None
    return last is None or last == output_shape[1]


def channel_axis_is_last(layer) -> bool:
    """Whether `layer` puts its channels last (Dense and channels_last)."""
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _channel_axis(layer, rank: int) -> int:
    return rank - 1 if channel_axis_is_last(layer) else 1


def _has_input(layer) -> bool:
    try:
        layer.input
    except (AttributeError, ValueError):
        return False
    return True
