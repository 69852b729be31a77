"""`audit`: explain a fit-vs-evaluate gap caused by BatchNormalization.

Holds `audit` and its result types, `AuditReport` and `LayerAudit`; the
remedy rule itself lives in `_advice`.
"""

import dataclasses
import logging
import warnings
from typing import Any
from typing import List
from typing import Optional
from typing import Union

import keras
import numpy as np
from keras import ops

from frozenbn import _advice
from frozenbn import _checks
from frozenbn import _data
from frozenbn import _math
from frozenbn import _report
from frozenbn import _stats

logger = logging.getLogger(__name__)

_REMEDIES = (
    "Remedies: (1) fit's batch statistics "
    f"close to the moving ones (drift score at most {_advice.DRIFT_SCORE:g} "
    "at the batch size you train with): train as usual, then "
    "`frozenbn.recalibrate(model, "
    "train_data)` before evaluate/save, so the saved model computes what "
    "fit optimized; (2) far from them, or batches under "
    f"{_advice.SMALL_BATCH}, too noisy to train on: `model = "
    "frozenbn.convert(model)`, at a small learning rate (Adam 1e-5, the "
    "rate of Keras's transfer-learning guide and of the benchmark).\n"
    "With frozen statistics a failed run shows in fit itself: a training "
    "loss stuck at ln 2 (0.693, two balanced classes) means the head "
    "collapsed to a constant; lower the learning rate."
)


@dataclasses.dataclass
class LayerAudit:
    """How far one BN layer's input statistics are from its moving ones.

    The data statistics are pooled over all of `x`, with upstream layers
    normalizing as in `fit`.

    Attributes:
        name: The layer's name.
        channels: Number of channels.
        batch_statistics_in_fit: Whether `fit` normalizes it with batch
            statistics (not if frozen, `trainable=False` or in `Frozen`).
        mean_shift: Channel mean of `|mu_data - mu_moving| /
            sqrt(var_moving + eps)`, the drift in moving-std units.
        max_mean_shift: The largest per-channel value of the same.
        variance_ratio: Geometric channel mean of `(var_data + eps) /
            (var_moving + eps)`; 1 is consistent.
        log_variance_ratio: Channel mean of `|log((var_data + eps) /
            (var_moving + eps))|`.
        score: `mean_shift + log_variance_ratio`, the ranking key.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((2,)),
    ...                           keras.layers.BatchNormalization(name="bn")])
    >>> layer = frozenbn.audit(model, np.ones((4, 2)), verbose=0).layers[0]
    >>> layer.name, layer.channels, layer.batch_statistics_in_fit
    ('bn', 2, True)
    """

    name: str
    channels: int
    batch_statistics_in_fit: bool
    mean_shift: float
    max_mean_shift: float
    variance_ratio: float
    log_variance_ratio: float
    score: float


@dataclasses.dataclass
class AuditReport:
    """The result of `audit`: print it, `.plot(path)` or `.to_dict()`.

    Attributes:
        model_name: Name of the audited model.
        layers: One `LayerAudit` per BN layer that saw the data, worst first.
        train_loss: Mean loss with BN as in `fit` (Dropout off), or `None`
            without labels or a loss.
        inference_loss: Mean loss in inference mode (`evaluate`), or `None`.
        ratio: `inference_loss / train_loss` (~1 is consistent), or `None`.
        max_output_diff: Largest absolute output difference between modes.
        mean_output_diff: Mean absolute output difference between modes.
        samples: Number of samples audited.
        steps: Number of batches audited.
        batch_size: The largest batch audited, the `fit` batch size the
            audit stands for (`None` if unknown).
        recommendation: A `frozenbn.Recommendation`, computed from the
            fields above when not given.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((2,)),
    ...                           keras.layers.BatchNormalization()])
    >>> report = frozenbn.audit(model, np.ones((4, 2)), verbose=0)
    >>> report.samples, report.batch_size, report.recommendation.remedy
    (4, 4, 'freeze')
    """

    model_name: str
    layers: List[LayerAudit]
    train_loss: Optional[float]
    inference_loss: Optional[float]
    ratio: Optional[float]
    max_output_diff: float
    mean_output_diff: float
    samples: int
    steps: int
    batch_size: Optional[int] = None
    recommendation: Optional[_advice.Recommendation] = None

    def __post_init__(self):
        if self.recommendation is None:
            self.recommendation = _advice.recommend(
                [a.score for a in self.layers],
                [a.batch_statistics_in_fit for a in self.layers],
                self.ratio,
                batch_size=self.batch_size,
            )

    def to_dict(self) -> dict:
        """A JSON-serializable dict (non-finite numbers become `None`)."""
        return _report.finite(dataclasses.asdict(self))

    def __str__(self) -> str:
        lines = [
            f"BatchNormalization audit of '{self.model_name}' on "
            f"{self.samples} samples ({self.steps} batches"
            + (f" of up to {self.batch_size}" if self.batch_size else "")
            + ")."
        ]
        if self.train_loss is not None:
            lines.append(
                f"Loss with BN as in fit: {_report.fmt(self.train_loss)}; in "
                f"inference (evaluate): {_report.fmt(self.inference_loss)}; "
                f"evaluate/fit ratio: {_report.fmt(self.ratio)}."
            )
        lines.append(
            "Output difference fit-mode vs inference: max "
            f"{_report.fmt(self.max_output_diff)}, mean "
            f"{_report.fmt(self.mean_output_diff)}."
        )
        if self.layers:
            shown = self.layers[:20]
            width = max(len("layer"), *(len(a.name) for a in shown))
            lines.append(
                f"{'layer':<{width}}  fit uses  mean shift  var ratio   score"
            )
            for a in shown:
                uses = "batch" if a.batch_statistics_in_fit else "moving"
                lines.append(
                    f"{a.name:<{width}}  {uses:<8}  {a.mean_shift:10.3g}  "
                    f"{a.variance_ratio:9.3g}  {a.score:6.3g}"
                )
            if len(self.layers) > len(shown):
                lines.append(
                    f"... and {len(self.layers) - len(shown)} more in "
                    "`report.layers`."
                )
            lines.append(
                "mean shift: |mean_data - moving_mean| / moving std, averaged "
                "over channels; var ratio: data / moving variance (geometric "
                "mean); score: mean shift + mean |log var ratio|. Large "
                "scores mean evaluate/predict normalize that layer unlike fit."
            )
        else:
            lines.append("No BatchNormalization layer saw the data.")
        lines.append(f"Recommendation: {self.recommendation}.")
        lines.append(_REMEDIES)
        return "\n".join(lines)

    def plot(self, path: str, top: int = 30) -> str:
        """Saves a bar chart of the worst `top` layers as a PNG at `path`.

        Needs matplotlib but no display, and leaves pyplot's backend alone.
        Returns `path`.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:  # pragma: no cover - depends on install
            raise ImportError(
                "`AuditReport.plot` needs matplotlib: pip install matplotlib"
            ) from e
        shown = list(reversed(self.layers[:top]))
        height = 1.5 + 0.25 * max(len(shown), 1)
        figure = Figure(figsize=(10, height))
        FigureCanvasAgg(figure)
        left, right = figure.subplots(1, 2, sharey=True)
        names = [a.name for a in shown]
        colors = [
            "tab:red" if a.batch_statistics_in_fit else "tab:gray"
            for a in shown
        ]
        left.barh(names, [a.mean_shift for a in shown], color=colors)
        left.set_xlabel("mean shift (moving-std units)")
        right.barh(names, [a.log_variance_ratio for a in shown], color=colors)
        right.set_xlabel("|log variance ratio|")
        title = f"BN audit of '{self.model_name}'"
        if self.train_loss is not None:
            title += (
                f" - loss fit-mode {_report.fmt(self.train_loss)}, inference "
                f"{_report.fmt(self.inference_loss)}"
            )
        figure.suptitle(title + "\n(red: fit uses batch statistics)")
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=100)
        return path


@_checks.old_argument_order((), first=2)
def audit(
    model: keras.layers.Layer,
    x: Any,
    batch_size: Optional[int] = None,
    steps: Optional[int] = None,
    verbose: Union[int, str] = "auto",
    *,
    loss: Any = None,
) -> AuditReport:
    """Explains a gap between `fit` and `evaluate` caused by BatchNormalization.

    One pass over `x` measures, per BN layer, how far the statistics `fit`
    normalizes with are from its moving statistics (worst first), and the
    outputs and loss as `fit` normalizes vs in inference mode (Dropout and
    augmentation off in both, so the difference is BN's). The model is not changed.

    Args:
        model: A Keras model or layer.
        x: Data in any form `model.fit` takes; `(x, y)` for losses.
        batch_size: Batch size for array `x`; `None` is 32. Use training's:
            batch statistics depend on it.
        steps: Number of batches; `None` uses all.
        verbose: 0 silent, 1 or `"auto"` progress bar, 2 one line.
        loss: A loss name, `keras.losses.Loss` or `loss(y_true, y_pred)`;
            defaults to the model's compiled loss, if any.

    Returns:
        An `AuditReport`: print it, `.plot(path)`, `.to_dict()`.

    Example:

    >>> import numpy as np, keras, frozenbn
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, (64, 3))
    >>> report = frozenbn.audit(model, x, verbose=0)
    >>> round(report.layers[0].mean_shift, 1)  # moving mean 0, std 1
    5.0
    """
    _checks.check_is_layer(model, "audit")
    verbose = _checks.check_verbose(verbose)
    loss_fn = _loss_function(model, loss)
    layers, _ = _stats.measurable_layers(model, None, logger)

    batch_in_fit = _stats.uses_batch_statistics_in_fit(model)
    tally = _Tally(loss_fn)
    with _stats.StatisticsPass(
        model,
        layers,
        mode=_stats.AS_IN_FIT,
        batch_in_fit=batch_in_fit,
        outputs=True,
    ) as stats:
        progbar = keras.utils.Progbar(
            _data.count_steps(x, steps=steps, batch_size=batch_size),
            verbose=verbose, unit_name="step")
        for batch, y, w in _data.iter_xy(x, steps=steps,
                                         batch_size=batch_size):
            tally.add(batch, y, w, *stats.step(batch))
            progbar.update(tally.steps)
        pooled = stats.result()

    audits = [
        _layer_audit(layer, pooled[layer], batch_in_fit[id(layer)])
        for layer in layers
        if pooled.called(layer)
    ]
    audits.sort(key=lambda a: a.score, reverse=True)
    if batch_size is not None and tally.largest < batch_size:
        warnings.warn(
            f"frozenbn.audit: `x` holds {tally.samples} sample(s), fewer than "
            f"batch_size={batch_size}, so it audited batches of "
            f"{tally.largest}: the drift scores and the recommendation are "
            f"for that batch size. Pass at least {batch_size} samples to "
            f"audit training at batch size {batch_size}.",
            stacklevel=3)  # the caller of the argument-order decorator
    return AuditReport(model_name=model.name, layers=audits, **tally.result())


class _Tally:
    """What `audit` sums over batches: sizes, output differences, losses."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn
        self.steps = self.samples = self.largest = self.diff_count = 0
        self.max_diff = self.diff_sum = 0.0
        self.losses = {"train": 0.0, "inference": 0.0, "weight": 0.0}

    def add(self, x, y, w, fit_out, infer_out) -> None:
        n = _batch_size(x)
        self.largest = max(self.largest, n)
        self.samples += n
        self.steps += 1
        for a, b in zip(keras.tree.flatten(fit_out),
                        keras.tree.flatten(infer_out)):
            diff = np.abs(ops.convert_to_numpy(a).astype(np.float64)
                          - ops.convert_to_numpy(b).astype(np.float64))
            if diff.size:
                self.max_diff = max(self.max_diff, float(diff.max()))
                self.diff_sum += float(diff.sum())
                self.diff_count += diff.size
        if self.loss_fn is not None and y is None:
            self.loss_fn = None
            logger.warning(
                "audit: the data has no labels, so losses are not "
                "computed. Pass (x, y) to compare the losses."
            )
        if self.loss_fn is not None:
            self.losses["train"] += n * self.loss_fn(x, y, fit_out, w)
            self.losses["inference"] += n * self.loss_fn(x, y, infer_out, w)
            self.losses["weight"] += n

    def result(self) -> dict:
        """`AuditReport`'s fields other than the model name and layers."""
        train = inference = ratio = None
        if self.loss_fn is not None and self.losses["weight"]:
            train = self.losses["train"] / self.losses["weight"]
            inference = self.losses["inference"] / self.losses["weight"]
            ratio = inference / train if train > 0 else None
        return dict(
            train_loss=train,
            inference_loss=inference,
            ratio=ratio,
            max_output_diff=self.max_diff,
            mean_output_diff=(self.diff_sum / self.diff_count
                              if self.diff_count else 0.0),
            samples=self.samples,
            steps=self.steps,
            batch_size=self.largest or None,
        )


def _layer_audit(layer, stats: _math.PooledMoments, batch_in_fit) -> LayerAudit:
    eps = float(layer.epsilon)
    moving_mean = ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
    moving_var = ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
    shift = np.abs(stats.mean - moving_mean) / np.sqrt(moving_var + eps)
    log_ratio = np.log((stats.variance + eps) / (moving_var + eps))
    mean_shift = float(shift.mean())
    abs_log = float(np.abs(log_ratio).mean())
    return LayerAudit(
        name=layer.name,
        channels=int(moving_mean.shape[0]),
        batch_statistics_in_fit=bool(batch_in_fit),
        mean_shift=mean_shift,
        max_mean_shift=float(shift.max()),
        variance_ratio=float(np.exp(log_ratio.mean())),
        log_variance_ratio=abs_log,
        score=mean_shift + abs_log,
    )


def _loss_function(model, loss):
    """Returns `fn(x, y, y_pred, sample_weight) -> float`, or None."""
    if loss is not None:
        try:
            loss_obj = keras.losses.get(loss)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"Unknown `loss`: {loss!r}. Pass a loss name such as "
                "'binary_crossentropy', a keras.losses.Loss or a function "
                "loss(y_true, y_pred)."
            ) from e
        if loss_obj is None or not callable(loss_obj):
            raise TypeError(f"`loss` must be callable. Received: loss={loss!r}")

        def fn(x, y, y_pred, w):
            y = keras.tree.map_structure(ops.convert_to_tensor, y)
            if isinstance(loss_obj, keras.losses.Loss):
                value = loss_obj(y, y_pred, sample_weight=w)
            else:
                value = loss_obj(y, y_pred)
                if w is not None:
                    w = ops.cast(ops.convert_to_tensor(w), value.dtype)
                    value = ops.sum(value * w) / ops.maximum(ops.sum(w), 1e-12)
            return float(ops.convert_to_numpy(ops.mean(value)))

        return fn
    if getattr(model, "compiled", False) and getattr(model, "loss", None):

        def fn(x, y, y_pred, w):
            y = keras.tree.map_structure(ops.convert_to_tensor, y)
            if w is not None:
                w = keras.tree.map_structure(ops.convert_to_tensor, w)
            value = model.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=w, training=False
            )
            return float(ops.convert_to_numpy(value))

        return fn
    return None


def _batch_size(x) -> int:
    leaves = keras.tree.flatten(x)
    return int(np.shape(leaves[0])[0]) if leaves else 0
