"""Which remedy a BatchNormalization audit points to: one small pure rule.

`recommend` reads what `frozenbn.audit` measured — per BN layer, how far
the statistics of its inputs on the data, with the layers upstream
normalizing as in `fit` at the audited batch size, are from its moving
statistics (`score`) and whether `fit` normalizes it with batch statistics;
and the evaluate/fit loss ratio when labels were given — and names one
remedy with a one-line reason:

- `"none"`: the moving statistics fit the data and `fit` already uses them;
- `"recalibrate"`: `fit` normalizes with batch statistics that stay close to
  the moving ones: train as usual, then recalibrate on the training data
  (`frozenbn.recalibrate`, "precise BN") before you evaluate or save; also
  when the model already has the gap (evaluate/fit ratio above
  `GAP_RATIO`);
- `"freeze"`: `fit`'s batch statistics are far from the moving ones (small
  batches make them so), or the batches are smaller than `SMALL_BATCH`, too
  small to train on their statistics: training with them optimizes a model
  that `evaluate` does not run; freeze them (`frozenbn.convert`) to
  fine-tune;
- `"recalibrate then freeze"`: `fit` already uses the moving statistics,
  and they do not fit the data (or the gap is there): recalibrate them on
  it; they stay frozen.

The rule and its thresholds come from the gap benchmark at batch sizes 4
to 32; docs/benchmarks.md ("Small batches: when to freeze") gives the scores
and outcomes they were read from.
"""

import dataclasses
import math
from typing import ClassVar
from typing import Optional
from typing import Sequence

DRIFT_SCORE = 1.5
"""Worst layer score above which `fit`'s statistics are far from the moving
ones.

A layer's score is its mean shift (in moving-std units) plus its mean
|log variance ratio|, measured with the layers upstream normalizing as in
`fit` (see `frozenbn.audit`)."""

GAP_RATIO = 5.0
"""Evaluate/fit loss ratio above which the model has the gap."""

SMALL_BATCH = 32
"""Batch size below which `fit`'s batch statistics are too noisy to train
on, whatever the drift score: in the gap benchmark, below it freezing won
where the drift score did not say so. Batch normalization's known weakness
at small batches (Wu and He, Group Normalization, 2018) is why detectron2
and mmdet freeze it there."""

NONE = "none"
FREEZE = "freeze"
RECALIBRATE_THEN_FREEZE = "recalibrate then freeze"
RECALIBRATE = "recalibrate"


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A remedy and the one-line reason for it.

    Attributes:
        remedy: `"none"`, `"freeze"`, `"recalibrate then freeze"` or
            `"recalibrate"`.
        reason: What was measured that leads to it, and what to call.
        DRIFT_SCORE, GAP_RATIO, SMALL_BATCH: the rule's thresholds (class
            attributes; see the module's constants).
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

        For a recorded audit, say: per BN layer its drift score and whether
        `fit` normalizes it with batch statistics; the evaluate/fit loss
        ratio if known; the batch size `fit` runs at.

        >>> from frozenbn import Recommendation
        >>> Recommendation.from_scores([2.4], [True], batch_size=32).remedy
        'freeze'
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
    """Names the remedy that an audit's measurements point to.

    Args:
        scores: Per BN layer, the audit's drift score; non-finite is drift.
        batch_statistics_in_fit: Per BN layer, whether `fit` normalizes it
            with batch statistics.
        ratio: The evaluate/fit loss ratio, or `None` without labels.
        batch_size: The batch size `fit` runs at, or `None` if unknown.
        drift_score: Worst score above which statistics do not fit.
        gap_ratio: Ratio above which the model has the gap.
        small_batch: Batch size below which batch statistics are too noisy.

    Example:

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
    """`recommend` where `fit` normalizes every layer with its moving
    statistics: they are what does not fit the data, if anything."""
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
