"""The fit-vs-evaluate scenario, shared by `frozenbn demo` and the benchmark.

A ResNet50 backbone is "pretrained" on a source image domain (its BN
statistics then set to their converged values), put in the Sequential head
of the classic bug report (GAP, Dense 64 relu, Dropout .5, Dense 64,
Dropout .5, Dense 1 sigmoid), compiled with Adam and binary cross-entropy,
and fine-tuned on a different target domain whose training split is
imbalanced and oversampled to balanced batches, with `EarlyStopping` and a
best `ModelCheckpoint`. The checkpoint is reloaded from disk with plain
`keras.models.load_model`, as a user would, and evaluated on the *same*
oversampled training batches and on held-out data. Each way of handling
BatchNormalization is an arm (`frozenbn.demo.arms`).

With stock Keras, the loss `fit()` reports and the loss `evaluate()` gives
on the same images disagree: `fit()` normalizes with each batch's
statistics, `evaluate()` with moving averages that lag behind the
fine-tuned weights. Frozen statistics (`frozenbn.convert`, after
`frozenbn.recalibrate` on the target) or precise statistics after training
(`frozenbn.recalibrate`) make the two agree.
"""

import dataclasses
import math
import os
import tempfile
import time
from typing import Optional
from typing import Sequence

import keras
import numpy as np

from frozenbn import _images
from frozenbn.demo import arms as arms_lib
from frozenbn.demo import machine
from frozenbn.demo import images
from frozenbn.demo import training
from frozenbn.demo.results import ArmResult
from frozenbn.demo.results import ScenarioResult
from frozenbn.demo.results import heldout_prediction_std


@dataclasses.dataclass
class ScenarioConfig:
    """Sizes and hyper-parameters of one scenario run.

    Attributes:
        image_size: Side of the square input images. Defaults to 32.
        weights: `None` (random init, then pretrained on the source
            domain), `"imagenet"`, or a path to ResNet50 weights. Defaults
            to `None`.
        backbone: `"resnet50"` (the default), or `"small"` or `"medium"`,
            residual networks that compile in seconds (`training.BACKBONES`).
        pretrain_epochs: Source-domain epochs when `weights` is `None`.
            Defaults to 4.
        epochs: Maximum fine-tuning epochs (early stopping may end sooner).
        head_epochs: Epochs of head-only training in arms that train the
            head first (Keras's two-phase recipe).
        batch_size: Batch size of fine-tuning, evaluation and the audit
            (and of pretraining unless `pretrain_batch_size` is set).
            Defaults to 32.
        pretrain_batch_size: Batch size of source pretraining, or `None`
            for `batch_size`. Defaults to `None`.
        learning_rate: Adam learning rate of stock BN and of head-only
            training. Defaults to 1e-3 (the bug report's).
        frozen_learning_rate: Adam learning rate of arms that train the
            backbone with fixed statistics. Defaults to 1e-5, the rate of
            Keras's transfer-learning guide: at 1e-4 the head's ReLU units
            die in the first epochs on some seeds (docs/findings.md).
        frozen_warmup_epochs: Epochs over which the Adam rate of the arms
            with fixed statistics rises linearly from 0 to
            `frozen_learning_rate` (a warm-up); 0 (the default): none.
        patience: `EarlyStopping` patience on the training loss.
        seed: Seed of everything (weights, shuffling, oversampling).
        max_source: Optional cap on source train images.
        max_target: Optional cap on target train images (held-out images
            are capped at it too).
        curves: Whether to evaluate on the training data after every epoch
            (for the per-epoch plot). Defaults to `True`.
        deterministic: Whether to ask the backend for deterministic ops
            (TensorFlow's `enable_op_determinism`, which stays on for the
            process). Defaults to `False`.
    """

    image_size: int = 32
    weights: Optional[str] = None
    backbone: str = "resnet50"
    pretrain_epochs: int = 4
    epochs: int = 12
    head_epochs: int = 2
    batch_size: int = 32
    pretrain_batch_size: Optional[int] = None
    learning_rate: float = 1e-3
    frozen_learning_rate: float = 1e-5
    frozen_warmup_epochs: int = 0
    patience: int = 3
    seed: int = 0
    max_source: Optional[int] = None
    max_target: Optional[int] = None
    curves: bool = True
    deterministic: bool = False


def run_scenario(
    data: images.DemoData,
    config: Optional[ScenarioConfig] = None,
    arms: Sequence[str] = arms_lib.DEMO_ARMS,
    *,
    checkpoint_dir: Optional[str] = None,
    verbose: int = 1,
) -> ScenarioResult:
    """Runs the fit-vs-evaluate scenario and measures every arm.

    Args:
        data: Source and target domains (uint8 images, integer labels; the
            target's are 0/1), e.g. from `images.load_demo_data()`.
        config: A `ScenarioConfig`. Defaults to `ScenarioConfig()`.
        arms: Names from `arms.ARMS`, run in this order; an arm derived
            from another must come after it. Defaults to `arms.DEMO_ARMS`.
        checkpoint_dir: Where the checkpoints go: each trained arm's best
            weights (`NAME.weights.h5`; Keras 3 writes the optimizer's
            state into it too, about 280 MB for ResNet50) and each
            recalibrated arm's model (`NAME.keras`). Defaults to a temporary
            folder deleted at the end.
        verbose: 0 for silence, 1 for a progress bar per stage.

    Returns:
        A `ScenarioResult`.

    Example:

    >>> from frozenbn.demo import images, scenario
    >>> result = scenario.run_scenario(  # doctest: +SKIP
    ...     images.load_demo_data(), scenario.ScenarioConfig(epochs=3))
    >>> print(result.table())  # doctest: +SKIP
    """
    config = config or ScenarioConfig()
    arms = tuple(arms)
    arms_lib.check_arms(arms)
    if config.deterministic:
        _enable_determinism()
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="frozenbn-") as tmp:
            return _run(data, config, arms, tmp, verbose)
    os.makedirs(checkpoint_dir, exist_ok=True)
    return _run(data, config, arms, checkpoint_dir, verbose)


def _run(data, config, arms, workdir, verbose) -> ScenarioResult:
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    source, target, counts = prepare_data(data, config)
    _say(verbose, f"{training.backbone_name(config.backbone)} "
                  f"{config.image_size}x{config.image_size}, "
                  f"weights={config.weights}, backend "
                  f"{keras.config.backend()}, seed {config.seed}")
    backbone, pretraining = pretrained_backbone(config, source, verbose)
    audit = audit_backbone(backbone, target.train.x, config.batch_size)
    _say(verbose, f"audit of the pretrained backbone on the target: "
                  f"{audit['recommendation']}")
    pretrained = backbone.get_weights()
    bases = {arms_lib.ARMS[name].derived_from for name in arms}
    results, trained = [], {}
    for index, name in enumerate(arms, 1):
        arm = arms_lib.ARMS[name]
        _say(verbose, f"[{index}/{len(arms)}] {arm.label}")
        if arm.derived_from:
            result = _recalibrated_arm(arm, results, trained, target, config,
                                       workdir)
        else:
            result, model = _train_arm(arm, backbone, pretrained, target,
                                       config, workdir, verbose)
            if name in bases:
                trained[name] = model
        results.append(result)
    return ScenarioResult(
        config=dataclasses.asdict(config),
        arms=results,
        data={
            "source_train": len(source.train.x),
            "source_train_accuracy": pretraining.get("accuracy"),
            "target_train": int(counts.sum()),
            "target_train_per_class": [int(c) for c in counts],
            "target_train_oversampled": len(target.train.x),
            "target_heldout": len(target.heldout.x),
        },
        environment=machine.environment_info(),
        seconds=time.perf_counter() - start,
        cpu_seconds=_cpu_seconds() - cpu_start,
        audit=audit,
    )


def prepare_data(data: images.DemoData, config: ScenarioConfig) -> tuple:
    """Preprocessed source domain and oversampled, preprocessed target.

    The target's training split is capped at `config.max_target` and its
    minority class repeated until both classes are as frequent (seeded by
    `config.seed`), as the bug report did; `evaluate` then runs on the
    same oversampled batches.

    Returns:
        `(source, target, counts)`: `Domain`s of float32 `Split`s, and the
        target's training images per class before oversampling.
    """
    size = config.image_size

    def prepare(split, cap=None):
        x, y = split.x[:cap], split.y[:cap]
        return images.Split(_images.preprocess(x, "caffe", size),
                            y.astype("float32"))

    source = images.Domain(prepare(data.source.train, config.max_source),
                           prepare(data.source.heldout, config.max_source))
    train = images.Split(data.target.train.x[:config.max_target],
                         data.target.train.y[:config.max_target])
    counts = np.bincount(train.y, minlength=2)
    balanced = images.oversample(train, config.seed)
    target = images.Domain(prepare(balanced),
                           prepare(data.target.heldout, config.max_target))
    return source, target, counts


def pretrained_backbone(config: ScenarioConfig, source: images.Domain,
                        verbose: int = 0) -> tuple:
    """The scenario's backbone, before any fine-tuning.

    With `config.weights` `None` (or `"none"`) it is trained on the source
    domain for `config.pretrain_epochs` (at `config.pretrain_batch_size`,
    else `config.batch_size`) and its statistics recalibrated there, as
    `training.pretrain_backbone` does; otherwise it holds the given weights.

    Args:
        config: A `ScenarioConfig`.
        source: The preprocessed source domain, from `prepare_data`.
        verbose: 0, or 1 for a line and a progress bar of the pretraining.

    Returns:
        `(backbone, pretraining)`: the model, and `pretrain_backbone`'s
        `{"accuracy": ...}` (`{}` when not pretrained here).
    """
    # The initial weights are part of "seed of everything": unseeded, the
    # same seed gave another pretrained backbone on every run.
    keras.utils.set_random_seed(config.seed)
    backbone = training.build_backbone(config.weights, config.image_size,
                                       config.backbone)
    if config.weights not in (None, "none"):
        return backbone, {}
    count = len(source.train.x)
    _say(verbose, f"pretraining on the source domain ({count} images)"
         if config.pretrain_epochs else "no pretraining epochs: the BN "
         f"statistics of the source domain ({count} images) only")
    return backbone, training.pretrain_backbone(
        backbone, *source.train, epochs=config.pretrain_epochs,
        batch_size=config.pretrain_batch_size or config.batch_size,
        learning_rate=config.learning_rate, seed=config.seed,
        verbose=verbose)


def audit_backbone(backbone, x, batch_size) -> dict:
    """`frozenbn.audit` of the pretrained backbone on the target images.

    Returns:
        `{"max_score", "mean_score", "recommendation"}`.
    """
    from frozenbn.audit import audit

    report = audit(backbone, x, batch_size=batch_size, verbose=0)
    scores = [layer.score for layer in report.layers]
    return {
        "max_score": float(max(scores)),
        "mean_score": float(np.mean(scores)),
        "recommendation": str(report.recommendation),
    }


def _train_arm(arm, backbone, pretrained, target, config, workdir, verbose):
    keras.utils.set_random_seed(config.seed)
    arm_backbone = keras.models.clone_model(backbone)
    arm_backbone.set_weights(pretrained)
    if arm.prepare is not None:
        arm_backbone = arm.prepare(arm_backbone, target.train.x)
    model = training.build_classifier(arm_backbone, config.seed)
    x, y = target.train
    if arm.head_first:
        arm_backbone.trainable = False
        _compile(model, config.learning_rate, x, y, config.batch_size)
        keras.utils.set_random_seed(config.seed)
        model.fit(x, y, batch_size=config.batch_size,
                  epochs=config.head_epochs, verbose=0,
                  callbacks=[training.Progress(config.head_epochs, verbose)])
        # The guide's second phase: this also sets every BN layer nested in
        # the backbone trainable again.
        arm_backbone.trainable = True
    lr = config.frozen_learning_rate if arm.frozen_lr else config.learning_rate
    warmup = config.frozen_warmup_epochs if arm.frozen_lr else 0
    _compile(model, lr, x, y, config.batch_size, warmup)
    # The best epoch's weights are checkpointed and loaded back into the
    # same model, whose evaluate function is then already traced (a reloaded
    # `.keras` model traces its functions again).
    path = os.path.join(workdir, f"{arm.name}.weights.h5")
    timer = training.EpochTimer()
    callbacks = [timer]
    if config.curves:
        callbacks.append(training.EvaluateOnTrainingData(x, y,
                                                         config.batch_size))
    callbacks += [
        keras.callbacks.ModelCheckpoint(path, monitor="loss",
                                        save_best_only=True,
                                        save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="loss",
                                      patience=config.patience),
        training.Progress(config.epochs, verbose),
    ]
    keras.utils.set_random_seed(config.seed)
    history = model.fit(x, y, batch_size=config.batch_size,
                        epochs=config.epochs, verbose=0,
                        callbacks=callbacks).history
    model.load_weights(path)
    return _measure(arm, lr, history, timer.seconds, model, target,
                    config), model


def _compile(model, learning_rate, x, y, batch_size, warmup_epochs=0):
    rate = learning_rate
    if warmup_epochs:
        warmup_steps = warmup_epochs * math.ceil(len(x) / batch_size)
        # Linear from 0 to `learning_rate` over `warmup_steps`, then constant
        # (a cosine "decay" to alpha=1 times the target).
        rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=learning_rate,
            warmup_steps=warmup_steps)
    training.compile_model(model, keras.optimizers.Adam(rate),
                           "binary_crossentropy", x, y, batch_size)


def _recalibrated_arm(arm, results, trained, target, config, workdir):
    """Recalibrates a copy of a trained arm's model; measures it reloaded."""
    from frozenbn.recalibrate import recalibrate

    base = next(r for r in results if r.name == arm.derived_from)
    base_path = os.path.join(workdir, f"{arm.derived_from}.keras")
    trained[arm.derived_from].save(base_path)
    model = keras.models.load_model(base_path)
    path = os.path.join(workdir, f"{arm.name}.keras")
    recalibrate(model, target.train.x, verbose=0,
                batch_size=config.batch_size)
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
    predictions = model.predict(target.heldout.x, verbose=0,
                                batch_size=config.batch_size)
    fit_mode = training.fit_mode_loss(model, *target.train,
                                      batch_size=config.batch_size)
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
        heldout_prediction_std=heldout_prediction_std(predictions),
        fit_mode_loss=fit_mode,
        seconds_per_epoch=float(np.median(seconds)),
        curves=curves,
    )


def _evaluate(model, split, batch_size) -> dict:
    scores = model.evaluate(split.x, split.y, batch_size=batch_size,
                            verbose=0, return_dict=True)
    return {k: float(v) for k, v in scores.items()}


def _enable_determinism() -> None:
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _cpu_seconds() -> float:
    return time.process_time()  # every thread of the process


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)
