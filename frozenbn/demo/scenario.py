"""The fit-vs-evaluate scenario, shared by `frozenbn demo` and the benchmark.

A ResNet50 backbone "pretrained" on a source image domain is put in the
Sequential head of the classic bug report (GAP, Dense 64 relu, Dropout .5,
Dense 64, Dropout .5, Dense 1 sigmoid), compiled with Adam and binary
cross-entropy, and fine-tuned on a shifted target domain with
`EarlyStopping` and a best `ModelCheckpoint`. The checkpoint is reloaded
from disk with plain `keras.models.load_model`, as a user would, and
evaluated on the *same* training data and on held-out data. Each way of
handling BatchNormalization is an "arm" (see `ARMS`).

With stock Keras the loss `fit()` reports and the loss `evaluate()` gives on
the same images disagree by orders of magnitude: `fit()` normalizes with
each batch's statistics, `evaluate()` with moving averages that lag behind
the fine-tuned weights. Frozen statistics (`frozenbn.convert`) or precise
statistics (`frozenbn.recalibrate`) make the two agree.
"""

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable
from typing import Optional
from typing import Sequence

import keras
import numpy as np

from frozenbn import _images
from frozenbn import _report
from frozenbn.demo.data import DemoData
from frozenbn.demo.data import Domain

# Why the frozen arms get a 10x smaller learning rate: with frozen
# statistics the backbone is no longer re-normalized by each batch, so a
# large Adam step on all its weights can push activations far from the
# (fixed) moving statistics; at the bug report's 1e-3 the measured result is
# a constant predictor (fit = evaluate = 0.693). Keras's own transfer
# learning guide fine-tunes a frozen-BN backbone at 1e-5.
FROZEN_LR_NOTE = (
    "Arms whose BatchNormalization uses fixed statistics while the backbone "
    "trains get the smaller learning rate: without per-batch "
    "re-normalization, Adam at 1e-3 can drive a frozen ResNet50 to a "
    "constant predictor (Keras's transfer-learning guide uses 1e-5)."
)


@dataclasses.dataclass
class ScenarioConfig:
    """Sizes and hyper-parameters of one scenario run.

    Attributes:
        image_size: Side of the square input images. Defaults to 32.
        weights: `None` (random init, then pretrained on the source
            domain), `"imagenet"`, or a path to ResNet50 weights. Defaults
            to `None`.
        pretrain_epochs: Source-domain epochs when `weights` is `None`.
        epochs: Maximum fine-tuning epochs (early stopping may end sooner).
        batch_size: Batch size everywhere. Defaults to 32.
        learning_rate: Adam learning rate of arms that train stock BN, or
            no backbone at all. Defaults to 1e-3 (the bug report's).
        frozen_learning_rate: Adam learning rate of arms that train the
            backbone with fixed statistics. Defaults to 1e-4.
        patience: `EarlyStopping` patience on the training loss.
        seed: Seed for `keras.utils.set_random_seed`.
        max_source: Optional cap on source train images.
        max_target: Optional cap on target train images (held-out images
            are capped at half of it).
        curves: Whether to evaluate on the training data after every epoch
            (for the per-epoch plot). Defaults to `True`.
    """

    image_size: int = 32
    weights: Optional[str] = None
    pretrain_epochs: int = 2
    epochs: int = 6
    batch_size: int = 32
    learning_rate: float = 1e-3
    frozen_learning_rate: float = 1e-4
    patience: int = 2
    seed: int = 0
    max_source: Optional[int] = None
    max_target: Optional[int] = None
    curves: bool = True


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way of fine-tuning: how the backbone is prepared, and lr.

    Attributes:
        name: Short identifier, used in file names and JSON.
        label: Human-readable description, used in tables and plots.
        frozen_lr: Whether the arm uses `frozen_learning_rate`.
        prepare: `prepare(backbone, x_train) -> backbone`, run on a copy of
            the pretrained backbone before the head is put on.
        derived_from: For arms that change another arm's checkpoint
            after training (recalibration) instead of training their own.
    """

    name: str
    label: str
    frozen_lr: bool = False
    prepare: Optional[Callable] = None
    derived_from: Optional[str] = None


@dataclasses.dataclass
class ArmResult:
    """What one arm measured.

    `fit_*` are the `fit()` logs of the epoch that was checkpointed (the
    best training loss); `eval_*` come from `evaluate()` of the checkpoint
    reloaded from disk, on the same training images; `heldout_*` on the
    held-out images. `curves` holds per-epoch lists.
    """

    name: str
    label: str
    learning_rate: float
    epochs_run: int
    best_epoch: int
    fit_loss: float
    fit_accuracy: float
    fit_loss_last: float
    eval_loss: float
    eval_accuracy: float
    heldout_loss: float
    heldout_accuracy: float
    seconds_per_epoch: float
    curves: dict

    @property
    def ratio(self) -> float:
        """`evaluate()` loss on the training data over the `fit()` loss."""
        return self.eval_loss / max(self.fit_loss, 1e-12)


@dataclasses.dataclass
class ScenarioResult:
    """The arms' results with the configuration and environment."""

    config: dict
    arms: list
    data: dict
    environment: dict
    seconds: float

    @classmethod
    def from_dict(cls, payload: dict) -> "ScenarioResult":
        """Rebuilds a result from `to_dict()` output (e.g. a JSON file)."""
        fields = {f.name for f in dataclasses.fields(ArmResult)}
        arms = [ArmResult(**{k: v for k, v in arm.items() if k in fields})
                for arm in payload["arms"]]
        return cls(config=payload["config"], arms=arms, data=payload["data"],
                   environment=payload["environment"],
                   seconds=payload["seconds"])

    def arm(self, name: str) -> ArmResult:
        """The result of the arm called `name`."""
        for result in self.arms:
            if result.name == name:
                return result
        raise KeyError(f"No arm named {name!r}; ran {self.names}.")

    @property
    def names(self) -> list:
        """Names of the arms, in run order."""
        return [result.name for result in self.arms]

    def to_dict(self) -> dict:
        """A JSON-serializable dict (ratios included)."""
        arms = []
        for result in self.arms:
            arms.append({**dataclasses.asdict(result), "ratio": result.ratio})
        return {
            "config": self.config,
            "data": self.data,
            "environment": self.environment,
            "seconds": self.seconds,
            "arms": arms,
        }

    def table(self, markdown: bool = False) -> str:
        """The results table, as aligned text or as markdown."""
        header = ["arm", "lr", "fit loss", "evaluate loss (same data)",
                  "eval/fit", "fit acc", "evaluate acc", "held-out acc",
                  "s/epoch"]
        rows = [
            [r.label, f"{r.learning_rate:g}", f"{r.fit_loss:.4g}",
             f"{r.eval_loss:.4g}", f"{r.ratio:.3g}", f"{r.fit_accuracy:.3f}",
             f"{r.eval_accuracy:.3f}", f"{r.heldout_accuracy:.3f}",
             f"{r.seconds_per_epoch:.2f}"]
            for r in self.arms
        ]
        return _report.format_table(header, rows, markdown)


def _freeze_backbone(backbone, x_train):
    backbone.trainable = False
    return backbone


def _freeze_bn_layers(backbone, x_train):
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return backbone


def _convert(backbone, x_train):
    import frozenbn

    return frozenbn.convert(backbone)


def _recalibrate_then_convert(backbone, x_train):
    from frozenbn.recalibrate import recalibrate

    recalibrate(backbone, x_train, verbose=0)
    return _convert(backbone, x_train)


ARMS = {
    arm.name: arm
    for arm in (
        Arm("stock", "Keras, stock BN"),
        Arm("keras_backbone_frozen", "Keras, backbone trainable=False",
            prepare=_freeze_backbone),
        Arm("keras_bn_frozen", "Keras, BN trainable=False", frozen_lr=True,
            prepare=_freeze_bn_layers),
        Arm("frozenbn", "frozenbn.convert (frozen)", frozen_lr=True,
            prepare=_convert),
        Arm("frozenbn_recalibrated", "frozenbn recalibrate + convert",
            frozen_lr=True, prepare=_recalibrate_then_convert),
        Arm("stock_recalibrated", "Keras stock + frozenbn.recalibrate",
            derived_from="stock"),
    )
}
"""Every arm, by name (the benchmark runs all of them)."""

DEMO_ARMS = ("stock", "frozenbn", "stock_recalibrated")
"""The arms `frozenbn demo` runs."""


def run_scenario(
    data: DemoData,
    config: Optional[ScenarioConfig] = None,
    arms: Sequence[str] = DEMO_ARMS,
    *,
    checkpoint_dir: Optional[str] = None,
    verbose: int = 1,
) -> ScenarioResult:
    """Runs the fit-vs-evaluate scenario and measures every arm.

    Args:
        data: Source and target domains (uint8 images, 0/1 labels), e.g.
            from `frozenbn.demo.data.load_demo_data()`.
        config: A `ScenarioConfig`. Defaults to `ScenarioConfig()`.
        arms: Names from `ARMS`, run in this order; an arm derived from
            another must come after it. Defaults to `DEMO_ARMS`.
        checkpoint_dir: Where the `.keras` checkpoints go. Defaults to a
            temporary folder deleted at the end (ResNet50 checkpoints are
            about 100 MB each).
        verbose: 0 for silence, 1 for a progress bar per stage.

    Returns:
        A `ScenarioResult`.

    Example:

    >>> from frozenbn.demo import data, scenario
    >>> result = scenario.run_scenario(  # doctest: +SKIP
    ...     data.load_demo_data(), scenario.ScenarioConfig(epochs=3))
    >>> print(result.table())  # doctest: +SKIP
    """
    config = config or ScenarioConfig()
    _check_arms(arms)
    start = time.perf_counter()
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="frozenbn-") as tmp:
            return _run(data, config, arms, tmp, verbose, start)
    os.makedirs(checkpoint_dir, exist_ok=True)
    return _run(data, config, arms, checkpoint_dir, verbose, start)


def _run(data, config, arms, workdir, verbose, start) -> ScenarioResult:
    source, target = _prepare_data(data, config)
    _say(verbose, f"ResNet50 {config.image_size}x{config.image_size}, "
                  f"weights={config.weights}, backend "
                  f"{keras.config.backend()}")
    backbone = build_backbone(config.weights, config.image_size)
    if config.weights in (None, "none"):
        pretrain_backbone(backbone, source, config, verbose)
    pretrained = backbone.get_weights()
    results, paths = [], {}
    for index, name in enumerate(arms, 1):
        arm = ARMS[name]
        _say(verbose, f"[{index}/{len(arms)}] {arm.label}")
        if arm.derived_from:
            result = _recalibrated_arm(arm, results, paths, target, config,
                                       workdir)
        else:
            result, paths[name] = _train_arm(arm, backbone, pretrained,
                                             target, config, workdir, verbose)
        results.append(result)
    return ScenarioResult(
        config=dataclasses.asdict(config),
        arms=results,
        data={
            "source_train": len(source.train.x),
            "target_train": len(target.train.x),
            "target_heldout": len(target.heldout.x),
        },
        environment=_report.environment_info(),
        seconds=time.perf_counter() - start,
    )


def build_backbone(weights: Optional[str], image_size: int) -> keras.Model:
    """A ResNet50 feature extractor (`include_top=False`).

    Args:
        weights: `None`/`"none"` (random init), `"imagenet"` (downloaded by
            Keras, or read from its cache), or a local weights file.
        image_size: Side of the square RGB input (at least 32).

    Returns:
        The backbone model.
    """
    if weights in (None, "none"):
        weights = None
    elif weights != "imagenet" and not os.path.isfile(weights):
        raise FileNotFoundError(f"ResNet50 weights file not found: {weights}")
    return keras.applications.ResNet50(
        weights=weights, include_top=False,
        input_shape=(image_size, image_size, 3),
    )


def pretrain_backbone(
    backbone: keras.Model, source: Domain, config: ScenarioConfig,
    verbose: int = 1,
) -> None:
    """Trains `backbone` briefly on the source domain, then recalibrates.

    A linear head on global-average-pooled features is trained for
    `config.pretrain_epochs`; then the backbone's BN statistics are set to
    their exact population values on the source images with
    `frozenbn.recalibrate`, the converged state of a long pretraining run
    (a few epochs of momentum 0.99 leave them half at their initial 0/1).

    Args:
        backbone: The backbone, trained in place.
        source: The source domain, preprocessed float images.
        config: Provides epochs, batch size, learning rate and seed.
        verbose: 0 or 1.
    """
    from frozenbn.recalibrate import recalibrate

    x, y = source.train
    if config.pretrain_epochs > 0:
        _say(verbose, f"pretraining on the source domain ({len(x)} images)")
        keras.utils.set_random_seed(config.seed)
        model = keras.Sequential([
            keras.Input(x.shape[1:]), backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        model.compile(keras.optimizers.Adam(config.learning_rate),
                      "binary_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=config.batch_size,
                  epochs=config.pretrain_epochs, verbose=0,
                  callbacks=[_Progress(config.pretrain_epochs, verbose)])
    recalibrate(backbone, x, verbose=0, batch_size=config.batch_size)


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


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class _Progress(keras.callbacks.Callback):
    """A Keras progress bar over epochs, with the latest losses."""

    def __init__(self, epochs: int, verbose: int):
        super().__init__()
        self.verbose = verbose
        self.bar = keras.utils.Progbar(
            epochs, verbose=verbose, unit_name="epoch",
            stateful_metrics=["loss", "eval_loss"],
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        values = [(k, logs[k]) for k in ("loss", "eval_loss") if k in logs]
        self.bar.update(epoch + 1, values=values)

    def on_train_end(self, logs=None):
        if self.verbose and self.bar._seen_so_far < self.bar.target:
            self.bar.update(self.bar.target, finalize=True)


def _train_arm(arm, backbone, pretrained, target, config, workdir, verbose):
    keras.utils.set_random_seed(config.seed)
    arm_backbone = keras.models.clone_model(backbone)
    arm_backbone.set_weights(pretrained)
    if arm.prepare is not None:
        arm_backbone = arm.prepare(arm_backbone, target.train.x)
    model = build_classifier(arm_backbone, config.seed)
    lr = config.frozen_learning_rate if arm.frozen_lr else config.learning_rate
    model.compile(keras.optimizers.Adam(lr), "binary_crossentropy",
                  metrics=["accuracy"])
    path = os.path.join(workdir, f"{arm.name}.keras")
    timer = _EpochTimer()
    callbacks = [timer]
    if config.curves:
        callbacks.append(EvaluateOnTrainingData(*target.train,
                                                config.batch_size))
    callbacks += [
        keras.callbacks.ModelCheckpoint(path, monitor="loss",
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="loss",
                                      patience=config.patience),
        _Progress(config.epochs, verbose),
    ]
    x, y = target.train
    keras.utils.set_random_seed(config.seed)
    history = model.fit(x, y, batch_size=config.batch_size,
                        epochs=config.epochs, verbose=0,
                        callbacks=callbacks).history
    del model
    reloaded = keras.models.load_model(path)
    return _measure(arm, lr, history, timer.seconds, reloaded, target,
                    config), path


def _recalibrated_arm(arm, results, paths, target, config, workdir):
    from frozenbn.recalibrate import recalibrate

    base = next(r for r in results if r.name == arm.derived_from)
    model = keras.models.load_model(paths[arm.derived_from])
    recalibrate(model, target.train.x, verbose=0,
                batch_size=config.batch_size)
    path = os.path.join(workdir, f"{arm.name}.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    history = {k: v for k, v in base.curves.items()
               if not k.startswith("eval_")}
    seconds = [base.seconds_per_epoch]
    return _measure(arm, base.learning_rate, history, seconds, reloaded,
                    target, config)


def _measure(arm, lr, history, seconds, model, target, config) -> ArmResult:
    losses = history["loss"]
    best = int(np.argmin(losses))
    evaluated = _evaluate(model, target.train, config.batch_size)
    heldout = _evaluate(model, target.heldout, config.batch_size)
    curves = {k: [float(v) for v in values] for k, values in history.items()}
    return ArmResult(
        name=arm.name,
        label=arm.label,
        learning_rate=lr,
        epochs_run=len(losses),
        best_epoch=best + 1,
        fit_loss=float(losses[best]),
        fit_accuracy=float(history["accuracy"][best]),
        fit_loss_last=float(losses[-1]),
        eval_loss=evaluated["loss"],
        eval_accuracy=evaluated["accuracy"],
        heldout_loss=heldout["loss"],
        heldout_accuracy=heldout["accuracy"],
        seconds_per_epoch=float(np.median(seconds)),
        curves=curves,
    )


def _evaluate(model, split, batch_size) -> dict:
    scores = model.evaluate(split.x, split.y, batch_size=batch_size,
                            verbose=0, return_dict=True)
    return {k: float(v) for k, v in scores.items()}


def preprocess(x: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 RGB images to ResNet50 inputs at `image_size` ("caffe" mode)."""
    return _images.preprocess(x, "caffe", image_size)


def _prepare_data(data: DemoData, config: ScenarioConfig) -> tuple:
    def prepare(domain, cap):
        heldout_cap = None if cap is None else max(cap // 2, 2)
        return Domain(
            *(type(split)(preprocess(split.x[:n], config.image_size),
                          split.y[:n].astype("float32"))
              for split, n in ((domain.train, cap),
                               (domain.heldout, heldout_cap)))
        )

    return (prepare(data.source, config.max_source),
            prepare(data.target, config.max_target))


def _check_arms(arms: Sequence[str]) -> None:
    for index, name in enumerate(arms):
        if name not in ARMS:
            raise ValueError(
                f"Unknown arm {name!r}. Expected one of {sorted(ARMS)}."
            )
        base = ARMS[name].derived_from
        if base and base not in arms[:index]:
            raise ValueError(
                f"Arm {name!r} recalibrates the checkpoint of arm {base!r}; "
                f"list {base!r} before it."
            )


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)


def plot_curves(result: ScenarioResult, path: str) -> str:
    """Plots per-epoch `fit()` loss vs `evaluate()` loss, one panel per arm.

    Args:
        result: A `ScenarioResult` (arms run with `curves=True` have the
            evaluate curve; recalibrated arms show their final point).
        path: Output PNG path.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = len(result.arms)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows),
                             squeeze=False, sharey=True)
    for ax, arm in zip(axes.flat, result.arms):
        epochs = np.arange(1, len(arm.curves["loss"]) + 1)
        ax.plot(epochs, arm.curves["loss"], "o-", label="fit() loss")
        if "eval_loss" in arm.curves:
            ax.plot(epochs, arm.curves["eval_loss"], "s--",
                    label="evaluate() loss, same data")
        ax.plot([arm.best_epoch], [arm.eval_loss], "r*", markersize=12,
                label="reloaded checkpoint, evaluate()")
        ax.set_yscale("log")
        ax.set_title(f"{arm.label}\nratio {arm.ratio:.3g}, "
                     f"held-out acc {arm.heldout_accuracy:.2f}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("binary cross-entropy (log)")
    axes[0][0].legend(fontsize=7)
    env = result.environment
    fig.suptitle(f"fit vs evaluate on the same training data — "
                 f"{env['backend']} on {env['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def verdict(result: ScenarioResult) -> str:
    """A few sentences that read the table: which arms have a gap.

    An arm "has the gap" when its `evaluate()` loss on the training data is
    more than 10x the `fit()` loss, or its `evaluate()` accuracy is more
    than 0.1 below the `fit()` accuracy (a model whose inference-mode
    output collapses to a constant has a loss near log 2 but chance
    accuracy); it is "consistent" at a ratio <= 1.5 (the bug is one-sided:
    `evaluate()` may be better than `fit()`, which runs dropout).
    """
    lines = []
    for arm in result.arms:
        drop = arm.fit_accuracy - arm.eval_accuracy
        if arm.ratio > 10:
            state = (f"GAP: evaluate() on the training data is "
                     f"{arm.ratio:.3g}x the fit() loss")
        elif arm.ratio <= 1.5:
            state = "consistent: evaluate() loss agrees with fit()"
        else:
            state = f"evaluate() loss is {arm.ratio:.3g}x the fit() loss"
        if drop > 0.1:
            state += (f"; GAP in accuracy: evaluate() {arm.eval_accuracy:.3f}"
                      f" vs fit() {arm.fit_accuracy:.3f}")
        lines.append(f"- {arm.label}: {state}; held-out accuracy "
                     f"{arm.heldout_accuracy:.3f}.")
    return "\n".join(lines)


def markdown_report(result: ScenarioResult, title: str) -> str:
    """The results as a markdown document (table, reading, setup)."""
    env, cfg, data = result.environment, result.config, result.data
    return "\n".join([
        f"# {title}",
        "",
        f"ResNet50 {cfg['image_size']}x{cfg['image_size']} "
        f"(weights={cfg['weights']}), the bug report's Sequential head, "
        "Adam, binary cross-entropy, EarlyStopping and a best "
        "ModelCheckpoint reloaded with `keras.models.load_model`. "
        f"{data['target_train']} target train images, "
        f"{data['target_heldout']} held out; `fit loss` is the checkpointed "
        "epoch's, `evaluate loss` is the reloaded checkpoint's on the same "
        "training images.",
        "",
        result.table(markdown=True),
        "",
        verdict(result),
        "",
        f"Learning rates: {cfg['learning_rate']:g} (stock BN, frozen "
        f"backbone) and {cfg['frozen_learning_rate']:g} (backbone trained "
        f"with fixed statistics). {FROZEN_LR_NOTE}",
        "",
        f"{_report.environment_line(env)} Total {result.seconds:.0f} s.",
        "",
        "Config: `" + json.dumps(cfg) + "`",
        "",
    ])


def write_results(
    result: ScenarioResult, out_dir: str, stem: str, title: str
) -> list:
    """Writes `<stem>.json`, `<stem>.md` and `<stem>.png` into `out_dir`.

    Args:
        result: The `ScenarioResult`.
        out_dir: Output folder, created if missing.
        stem: File name without extension.
        title: Heading of the markdown file.

    Returns:
        The three paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, stem)
    _report.write_json(result.to_dict(), base + ".json")
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(markdown_report(result, title))
    plot_curves(result, base + ".png")
    return [base + ".json", base + ".md", base + ".png"]
