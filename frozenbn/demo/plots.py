"""Plots of scenario results: per-epoch curves of one run, spread over seeds.

matplotlib is imported inside each function (the `demo` extra installs it)
and drawn on its Agg canvas, so no display is needed.
"""

from typing import Sequence

import numpy as np


def plot_curves(result, path: str) -> str:
    """Plots per-epoch `fit()` loss vs `evaluate()` loss, one panel per arm.

    Args:
        result: A `ScenarioResult` (arms run with `curves=True` have the
            evaluate curve; recalibrated arms show their final point).
        path: Output PNG path.

    Returns:
        `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n = len(result.arms)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    figure = Figure(figsize=(4.2 * cols, 3.4 * rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, arm in zip(axes.flat, result.arms):
        epochs = np.arange(1, len(arm.curves["loss"]) + 1)
        ax.plot(epochs, arm.curves["loss"], "o-", label="fit() loss")
        if "eval_loss" in arm.curves:
            ax.plot(epochs, arm.curves["eval_loss"], "s--",
                    label="evaluate() loss, same data")
        ax.plot([arm.best_epoch], [arm.eval_loss], "r*", markersize=12,
                label="reloaded checkpoint, evaluate()")
        ax.set_yscale("log")
        mode = ("" if arm.statistics_ratio is None
                else f"eval/fit-mode {arm.statistics_ratio:.3g}, ")
        ax.set_title(f"{arm.label}\n{mode}eval/fit {arm.ratio:.3g}, "
                     f"held-out acc {arm.heldout_accuracy:.2f}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("binary cross-entropy (log)")
    axes[0][0].legend(fontsize=7)
    env = result.environment
    figure.suptitle(f"fit vs evaluate on the same training data — "
                    f"{env['backend']} on {env['device']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def plot_seeds(
    results: Sequence, path: str, title: str = "", arms: Sequence = ()
) -> str:
    """Per-arm spread over seeds: eval/fit ratio and held-out accuracy.

    One dot per seed and a bar for the mean, so a remedy that learns on
    some seeds only is visible at a glance.

    Args:
        results: `ScenarioResult`s of the same arms, one per seed.
        path: Output PNG path.
        title: Figure title.
        arms: Arm names to show, in order. Defaults to those of the first
            result.

    Returns:
        `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(arms) or results[0].names
    labels = [results[0].arm(n).label for n in names]
    figure = Figure(figsize=(11, 0.55 * len(names) + 1.8))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(names))[::-1]
    for ax, key, scale in ((left, "ratio", "log"),
                           (right, "heldout_accuracy", "linear")):
        for pos, name in zip(positions, names):
            values = [getattr(r.arm(name), key) for r in results]
            ax.scatter(values, np.full(len(values), pos), s=22, alpha=0.75,
                       color="tab:blue", zorder=3)
            ax.plot([np.mean(values)] * 2, [pos - 0.3, pos + 0.3],
                    color="black", lw=2, zorder=4)
        ax.set_xscale(scale)
        ax.grid(alpha=0.3, axis="x")
    left.axvline(1.5, color="tab:green", ls=":", label="1.5 (consistent)")
    left.axvline(5.0, color="tab:red", ls=":", label="5 (gap)")
    left.set_xlabel("evaluate/fit loss ratio, same data (log)")
    left.legend(fontsize=7, loc="lower right")
    right.axvline(0.5, color="gray", ls=":", label="chance")
    right.axvline(0.75, color="tab:green", ls=":", label="0.75")
    right.set_xlabel("held-out accuracy")
    right.legend(fontsize=7, loc="lower left")
    left.set_yticks(positions)
    left.set_yticklabels(labels, fontsize=8)
    figure.suptitle(title or f"{len(results)} seeds: one dot per seed, "
                    "bar = mean", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
