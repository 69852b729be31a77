"""Which remedy a BatchNormalization audit points to: one small pure rule.

`recommend` reads what `frozenbn.audit` measured — per BN layer, how far
the statistics of its inputs on the data are from its moving statistics
(`score`) and whether `fit` normalizes it with batch statistics; and the
evaluate/fit loss ratio when labels were given — and names one remedy with
a one-line reason:

- `"none"`: the moving statistics fit the data and `fit` already uses them;
- `"freeze"`: they fit the data, but `fit` normalizes with batch
  statistics: freeze them (`frozenbn.convert`) so `fit` and `evaluate`
  compute the same function while you fine-tune;
- `"recalibrate then freeze"`: they do not fit the data: recalibrate them
  on it (`frozenbn.recalibrate`, "AdaBN"), then freeze them to fine-tune;
- `"recalibrate"`: the model already has the gap (evaluate/fit ratio above
  `GAP_RATIO`) and trains with batch statistics: recalibrate on the
  training data before you evaluate or save it.

The thresholds come from the measurements in docs/benchmarks.md (the gap
benchmark records the audit of every pretrained backbone it fine-tunes).
"""

import dataclasses
import math
from typing import Optional
from typing import Sequence

DRIFT_SCORE = 1.5
"""Worst layer score above which the moving statistics do not fit the data.

A layer's score is its mean shift (in moving-std units) plus its mean
|log variance ratio|, measured with the layers upstream normalizing as in
`fit` (see `frozenbn.audit`)."""

GAP_RATIO = 5.0
"""Evaluate/fit loss ratio above which the model has the gap."""

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
    """

    remedy: str
    reason: str

    def __str__(self) -> str:
        return f"{self.remedy}: {self.reason}"


def recommend(
    scores: Sequence[float],
    batch_statistics_in_fit: Sequence[bool],
    ratio: Optional[float] = None,
    *,
    drift_score: float = DRIFT_SCORE,
    gap_ratio: float = GAP_RATIO,
) -> Recommendation:
    """Names the remedy that an audit's measurements point to.

    Args:
        scores: Per BN layer, the audit's drift score (mean shift plus mean
            |log variance ratio|); non-finite scores count as drift.
        batch_statistics_in_fit: Per BN layer, whether `fit` normalizes it
            with batch statistics (same order as `scores`).
        ratio: The evaluate/fit loss ratio, or `None` without labels.
        drift_score: Worst score above which statistics do not fit.
        gap_ratio: Ratio above which the model has the gap.

    Returns:
        A `Recommendation`.

    Example:

    >>> recommend([0.2, 0.1], [True, True]).remedy
    'freeze'
    >>> recommend([3.0, 0.1], [True, True], ratio=40.0).remedy
    'recalibrate'
    """
    if len(scores) != len(batch_statistics_in_fit):
        raise ValueError(
            "`scores` and `batch_statistics_in_fit` must have one entry per "
            f"layer. Received {len(scores)} and "
            f"{len(batch_statistics_in_fit)}."
        )
    if not scores:
        return Recommendation(NONE, "no BatchNormalization layer saw the data")
    worst = max(
        (s if math.isfinite(s) else math.inf for s in scores)
    )
    in_fit = sum(bool(b) for b in batch_statistics_in_fit)
    has_gap = ratio is not None and (
        not math.isfinite(ratio) or ratio > gap_ratio
    )
    measured = f"worst layer drift score {worst:.3g}"
    if ratio is not None:
        measured += f", evaluate/fit loss ratio {ratio:.3g}"
    if has_gap and in_fit:
        return Recommendation(
            RECALIBRATE,
            f"{measured}: evaluate does not match fit; run "
            "frozenbn.recalibrate(model, train_data) before you evaluate "
            "or save (and freeze before training further)",
        )
    if worst > drift_score:
        return Recommendation(
            RECALIBRATE_THEN_FREEZE,
            f"{measured}; drift above {drift_score:g}: the moving statistics "
            "do not fit this data; frozenbn.recalibrate on it, then "
            "frozenbn.convert (frozen) to fine-tune",
        )
    if has_gap:
        # Every layer already normalizes with its moving statistics in fit,
        # and they fit the data: the gap is measured, its cause is not.
        return Recommendation(
            RECALIBRATE_THEN_FREEZE,
            f"{measured}; ratio above {gap_ratio:g} although fit normalizes "
            "no layer with batch statistics: recompute the statistics with "
            "frozenbn.recalibrate on this data, then frozenbn.convert "
            "(frozen) to fine-tune",
        )
    if in_fit:
        return Recommendation(
            FREEZE,
            f"{measured}; drift at most {drift_score:g}: the moving "
            f"statistics fit this data, but fit normalizes {in_fit} "
            "layer(s) with batch statistics; frozenbn.convert (frozen) "
            "keeps fit and evaluate the same",
        )
    return Recommendation(
        NONE,
        f"{measured}; drift at most {drift_score:g}, and fit already uses "
        "the moving statistics: fit and evaluate compute the same function",
    )
