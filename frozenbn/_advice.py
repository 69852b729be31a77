"""Which remedy a BatchNormalization audit points to: one small pure rule.

`recommend` maps what `frozenbn.audit` measured (per-layer drift scores,
whether `fit` uses batch statistics, the evaluate/fit loss ratio, the batch
size) to `"none"`, `"recalibrate"`, `"freeze"` or `"recalibrate then
freeze"`; docs/api.md states the rule, docs/findings.md where its
thresholds come from.
"""

import dataclasses
import math
from typing import ClassVar
from typing import Optional
from typing import Sequence

DRIFT_SCORE = 1.5
"""Worst `LayerAudit.score` above which `fit`'s statistics are far off."""

GAP_RATIO = 5.0
"""Evaluate/fit loss ratio above which the model has the gap."""

SMALL_BATCH = 32
"""Batch size below which batch statistics are too noisy to train on,
whatever the drift score (BN's small-batch weakness: Wu and He, 2018)."""

NONE = "none"
FREEZE = "freeze"
RECALIBRATE_THEN_FREEZE = "recalibrate then freeze"
RECALIBRATE = "recalibrate"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A remedy and the one-line reason for it, as `audit` reports it.

    Attributes:
        remedy: `"none"`, `"freeze"`, `"recalibrate then freeze"` or
            `"recalibrate"`.
        reason: What was measured that leads to it, and what to call.
        DRIFT_SCORE, GAP_RATIO, SMALL_BATCH: The rule's thresholds.

    Example:

    >>> from frozenbn import Recommendation
    >>> Recommendation.from_scores([2.4], [True], batch_size=32).remedy
    'freeze'
    """

    remedy: str
    reason: str
    DRIFT_SCORE: ClassVar[float] = DRIFT_SCORE
    GAP_RATIO: ClassVar[float] = GAP_RATIO
    SMALL_BATCH: ClassVar[int] = SMALL_BATCH

    def __str__(self) -> str:
        return f"{self.remedy}: {self.reason}"

    @classmethod
    def from_scores(cls, scores, batch_statistics_in_fit, ratio=None, *,
                    batch_size=None) -> "Recommendation":
        """The rule `frozenbn.audit` applies, on measurements you have.

        Takes per BN layer its drift score and whether `fit` uses batch
        statistics, the evaluate/fit loss ratio if known, and `fit`'s batch
        size.
        """
        return recommend(scores, batch_statistics_in_fit, ratio,
                         batch_size=batch_size)


def recommend(
    scores: Sequence[float],
    batch_statistics_in_fit: Sequence[bool],
    ratio: Optional[float] = None,
    *,
    batch_size: Optional[int] = None,
    drift_score: float = DRIFT_SCORE,
    gap_ratio: float = GAP_RATIO,
    small_batch: int = SMALL_BATCH,
) -> Recommendation:
    """Names the remedy an audit's measurements point to.

    As `Recommendation.from_scores` (a non-finite score counts as drift),
    with the module's thresholds overridable.

    >>> [recommend([0.2], [True]).remedy, recommend([2.4], [True]).remedy,
    ...  recommend([2.4], [False]).remedy,
    ...  recommend([0.2], [True], batch_size=8).remedy]
    ['recalibrate', 'freeze', 'recalibrate then freeze', 'freeze']
    """
    if len(scores) != len(batch_statistics_in_fit):
        raise ValueError(
            "`scores` and `batch_statistics_in_fit` must have one entry per "
            f"layer. Received {len(scores)} and "
            f"{len(batch_statistics_in_fit)}."
        )
    if not scores:
        return Recommendation(NONE, "no BatchNormalization layer saw the data")
    worst = max(s if math.isfinite(s) else math.inf for s in scores)
    in_fit = sum(bool(b) for b in batch_statistics_in_fit)
    has_gap = ratio is not None and (not math.isfinite(ratio)
                                     or ratio > gap_ratio)
    small = batch_size is not None and batch_size < small_batch
    measured = f"worst layer drift score {worst:.3g}" + (
        "" if batch_size is None else f" at batch size {batch_size}") + (
        "" if ratio is None else f", evaluate/fit loss ratio {ratio:.3g}")
    if has_gap and in_fit:
        return Recommendation(
            RECALIBRATE,
            f"{measured}: evaluate does not match fit; run "
            "frozenbn.recalibrate(model, train_data) before you evaluate "
            "or save",
        )
    if in_fit and (worst > drift_score or small):
        why = (
            f"batches under {small_batch}: fit's batch statistics in "
            f"{in_fit} layer(s) are too noisy to train on"
            if small
            else f"drift above {drift_score:g}: fit's batch statistics in "
            f"{in_fit} layer(s) are far from the moving ones (small batches "
            "make them so)"
        )
        return Recommendation(
            FREEZE,
            f"{measured}; {why}, so training with them optimizes a model "
            "that evaluate does not run; frozenbn.convert (frozen) to "
            "fine-tune, at a small learning rate (Adam 1e-5)",
        )
    if in_fit:  # no gap, little drift, batches large enough
        return Recommendation(
            RECALIBRATE,
            f"{measured}; drift at most {drift_score:g}: fit's batch "
            f"statistics in {in_fit} layer(s) stay close to the moving ones; "
            "train as usual, then frozenbn.recalibrate(model, train_data) "
            "before you evaluate or save (frozenbn.convert instead if fit "
            "must equal evaluate while you train)",
        )
    return _moving_statistics_only(measured, worst, has_gap, drift_score,
                                   gap_ratio)


def _moving_statistics_only(measured, worst, has_gap, drift_score,
                            gap_ratio) -> Recommendation:
    """`recommend` when `fit` uses the moving statistics everywhere."""
    if worst > drift_score or has_gap:
        why = (
            f"drift above {drift_score:g}"
            if worst > drift_score
            else f"ratio above {gap_ratio:g}"
        )
        return Recommendation(
            RECALIBRATE_THEN_FREEZE,
            f"{measured}; {why} although fit normalizes no layer with batch "
            "statistics: the moving statistics do not fit this data; "
            "recompute them with frozenbn.recalibrate on it (frozen layers "
            "stay frozen)",
        )
    return Recommendation(
        NONE,
        f"{measured}; drift at most {drift_score:g}, and fit already uses "
        "the moving statistics: fit and evaluate compute the same function",
    )
