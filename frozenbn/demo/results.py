"""What a scenario run measured, and how it is written: tables, JSON, markdown.

`ArmResult` holds one arm's numbers, `ScenarioResult` a whole run (the
arms, the configuration and the machine). `verdict` reads a run in a few
sentences; `write_results` writes it as JSON, markdown and a PNG of the
per-epoch curves.
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from frozenbn import Recommendation
from frozenbn import _report
from frozenbn.demo import arms as arms_lib
from frozenbn.demo import machine
from frozenbn.demo import plots
from frozenbn.demo import training

CONSISTENT_RATIO = 1.5
"""BN is not the cause of a gap when `evaluate()`'s loss is at most this
times the same weights' loss as `fit()` normalizes them (the comparison is
one-sided: `evaluate()` may do better)."""

GAP_RATIO = Recommendation.GAP_RATIO
"""BN makes a gap when that ratio is above this, as `frozenbn.audit` reads
an evaluate/fit loss ratio (the bug report's 1.7 / 0.2 is about 8)."""

RATIOS_EXPLAINED = (
    "eval/fit-mode: evaluate()'s loss on the training images over "
    "the loss of the same saved weights with BN normalizing as in fit() "
    "(Dropout off). Far above 1: BN makes the saved model differ from the "
    "one fit() trained. Near 1: BN is not the cause. eval/fit, evaluate()'s "
    "loss over fit()'s, also moves with Dropout and with the weights "
    "changing during an epoch."
)
"""The sentence that says what the demo's two ratios mean."""


@dataclasses.dataclass
class ArmResult:
    """What one arm measured.

    `fit_*` are the `fit()` logs of the epoch that was checkpointed (the
    best training loss); `eval_*` come from `evaluate()` of the checkpoint
    reloaded from disk, on the same (oversampled) training batches;
    `heldout_*` on the held-out images. `heldout_prediction_std` is the
    standard deviation of the held-out predicted probabilities (near 0: a
    constant predictor). `curves` holds per-epoch lists. `fit_mode_loss` is
    the reloaded checkpoint's loss on the training batches normalized as
    `fit` normalizes, without Dropout (`training.fit_mode_loss`).
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
    heldout_prediction_std: float
    seconds_per_epoch: float
    curves: dict
    fit_mode_loss: Optional[float] = None

    @property
    def ratio(self) -> float:
        """`evaluate()` loss on the training data over the `fit()` loss."""
        return self.eval_loss / max(self.fit_loss, 1e-12)

    @property
    def statistics_ratio(self) -> Optional[float]:
        """`evaluate()` loss over the same weights' loss as `fit` normalizes.

        `None` for results recorded before `fit_mode_loss` was measured.
        """
        if self.fit_mode_loss is None:
            return None
        return self.eval_loss / max(self.fit_mode_loss, 1e-12)

    @property
    def constant(self) -> bool:
        """Whether the reloaded model predicts (nearly) one value for all."""
        return self.heldout_prediction_std < 0.01


@dataclasses.dataclass
class ScenarioResult:
    """The arms' results with the configuration and environment."""

    config: dict
    arms: list
    data: dict
    environment: dict
    seconds: float
    cpu_seconds: float = float("nan")
    audit: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, payload: dict) -> "ScenarioResult":
        """Rebuilds a result from `to_dict()` output (e.g. a JSON file)."""
        fields = {f.name for f in dataclasses.fields(ArmResult)}
        arms = [ArmResult(**{k: v for k, v in arm.items() if k in fields})
                for arm in payload["arms"]]
        return cls(config=payload["config"], arms=arms, data=payload["data"],
                   environment=payload["environment"],
                   seconds=payload["seconds"],
                   cpu_seconds=payload.get("cpu_seconds") or float("nan"),
                   audit=payload.get("audit") or {})

    def arm(self, name: str) -> ArmResult:
        """The result of the arm called `name`."""
        for result in self.arms:
            if result.name == name:
                return result
        raise KeyError(f"No arm named {name!r}; ran {self.names}.")

    @property
    def best_arm(self) -> ArmResult:
        """The arm with the highest held-out accuracy (the first on a tie)."""
        return max(self.arms, key=lambda arm: arm.heldout_accuracy)

    @property
    def audit_pick(self) -> tuple:
        """`(remedy, arm name)`: what today's `audit` rule gives for this
        run's recorded drift score at its batch size (`arms.audit_pick`)."""
        return arms_lib.audit_pick(self.audit, self.config["batch_size"])

    @property
    def names(self) -> list:
        """Names of the arms, in run order."""
        return [result.name for result in self.arms]

    def to_dict(self) -> dict:
        """A JSON-serializable dict (ratios included)."""
        arms = [{**dataclasses.asdict(r), "ratio": r.ratio,
                 "statistics_ratio": r.statistics_ratio,
                 "constant": r.constant} for r in self.arms]
        return {
            "config": self.config,
            "data": self.data,
            "environment": self.environment,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "audit": self.audit,
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
        add_statistics_column(header, rows, self.arms)
        return _report.format_table(header, rows, markdown)


def verdict(result: ScenarioResult) -> str:
    """A few sentences that read the table: where BN makes a gap.

    Each arm is judged by eval/fit-mode (`ArmResult.statistics_ratio`;
    eval/fit for runs recorded without it): a gap above `GAP_RATIO`, none at
    `CONSISTENT_RATIO` or below. An accuracy drop of more than 0.1 and a
    reloaded model that predicts (nearly) a constant are called out. The
    last line says how the remedy `audit` recommended did.
    """
    lines = [RATIOS_EXPLAINED]
    for arm in result.arms:
        ratio, name = arm.statistics_ratio, "eval/fit-mode"
        if ratio is None:
            ratio, name = arm.ratio, "eval/fit"
        if ratio > GAP_RATIO:
            state = f"GAP, BN makes it: {name} {ratio:.3g}"
        elif ratio <= CONSISTENT_RATIO:
            state = f"no BN gap: {name} {ratio:.3g}"
        else:
            state = f"a small BN gap: {name} {ratio:.3g}"
        if name != "eval/fit":
            state += f" (eval/fit {arm.ratio:.3g})"
        if arm.fit_accuracy - arm.eval_accuracy > 0.1:
            state += (f"; accuracy evaluate() {arm.eval_accuracy:.3f} vs "
                      f"fit() {arm.fit_accuracy:.3f}")
        if arm.constant:
            state += "; the saved model predicts a constant"
        lines.append(f"- {arm.label}: {state}; held-out accuracy "
                     f"{arm.heldout_accuracy:.3f}.")
    if result.audit:
        lines.append(_audit_verdict(result))
    return "\n".join(lines)


def _audit_verdict(result: ScenarioResult) -> str:
    """How the arm of the remedy `audit` recommended did, against the best."""
    remedy, name = result.audit_pick
    line = f"- audit of the pretrained backbone said {remedy}"
    if name not in result.names:
        return line + f" (arm {name!r} did not run)."
    pick = result.arm(name)
    best = result.best_arm
    below = best.heldout_accuracy - pick.heldout_accuracy
    line += f": {pick.label}, held-out {pick.heldout_accuracy:.3f}, "
    if below <= 0:
        return line + "the best arm."
    return line + (f"{below:.3f} below the best arm ({best.label}, "
                   f"{best.heldout_accuracy:.3f}).")


def markdown_report(result: ScenarioResult, title: str) -> str:
    """The results as a markdown document (table, reading, setup)."""
    env, cfg, data = result.environment, result.config, result.data
    lines = [
        f"# {title}",
        "",
        f"{training.backbone_name(cfg.get('backbone', 'resnet50'))} "
        f"{cfg['image_size']}x{cfg['image_size']} "
        f"(weights={cfg['weights']}), the bug report's Sequential head, "
        "Adam, binary cross-entropy, EarlyStopping and the best "
        "ModelCheckpoint's weights loaded back from disk (recalibrated "
        "models saved and reloaded with `keras.models.load_model`). "
        f"{data['target_train']} target training images "
        f"({data['target_train_oversampled']} after oversampling the "
        f"minority class), {data['target_heldout']} held out; `fit loss` is "
        "the checkpointed epoch's, `evaluate loss` is the reloaded "
        "checkpoint's on the same oversampled training batches; "
        "`eval/fit-mode` divides it by the same checkpoint's loss on those "
        "batches normalized as `fit` normalizes, without Dropout (the part "
        "of the gap the statistics alone make).",
        "",
        result.table(markdown=True),
        "",
        verdict(result),
        "",
        f"Adam learning rates: {cfg['learning_rate']:g} (stock BN, frozen "
        f"backbone) and {cfg['frozen_learning_rate']:g} (backbone trained "
        "with fixed statistics).",
    ]
    if result.audit:
        lines += ["", "`frozenbn.audit` of the pretrained backbone on the "
                  "target training images: " + _audit_line(result.audit)]
    lines += footer(env, result.seconds, result.cpu_seconds, cfg)
    return "\n".join(lines)


def footer(env: dict, seconds: float, cpu_seconds: float, config: dict,
           label: str = "Config") -> list:
    """Closing markdown lines: machine, wall and CPU time, the config."""
    return [
        "",
        f"{machine.environment_line(env)} Total {seconds:.0f} s wall, "
        f"{cpu_seconds:.0f} s CPU.",
        "",
        f"{label}: `" + json.dumps(config) + "`",
        "",
    ]


def _audit_line(audit: dict) -> str:
    return (f"worst layer score {audit['max_score']:.3g}, mean score "
            f"{audit['mean_score']:.3g}; recommendation: "
            f"{audit['recommendation']}.")


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
    plots.plot_curves(result, base + ".png")
    return [base + ".json", base + ".md", base + ".png"]


def has_statistics_ratio(arms) -> bool:
    """Whether any of `arms` measured `fit_mode_loss`."""
    return any(arm.statistics_ratio is not None for arm in arms)


def add_statistics_column(header: list, rows: list, arms) -> None:
    """Inserts an `eval/fit-mode` column after `eval/fit`, one row per arm.

    Only where some arm measured it; an arm recorded before
    `fit_mode_loss` was measured shows "-".
    """
    if not has_statistics_ratio(arms):
        return
    column = header.index("eval/fit") + 1
    header.insert(column, "eval/fit-mode")
    for row, arm in zip(rows, arms):
        ratio = arm.statistics_ratio
        row.insert(column, "-" if ratio is None else f"{ratio:.3g}")


def heldout_prediction_std(predictions) -> float:
    """Standard deviation of predicted probabilities (0: a constant)."""
    return float(np.std(np.asarray(predictions, dtype=np.float64)))
