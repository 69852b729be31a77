"""Gap benchmark: fit() loss vs evaluate() loss on the same data, over seeds.

Runs the fit-vs-evaluate scenario of `frozenbn.demo.scenario` once per
seed with every arm of `frozenbn.demo.arms.GAP_ARMS`: stock Keras; Keras
backbone `trainable=False`; Keras BN-only `trainable=False`;
`frozenbn.convert` (frozen source statistics); `frozenbn.recalibrate` on the
target, then `convert`; stock fine-tuning followed by `recalibrate`. Each
arm fine-tunes ResNet50 with EarlyStopping and a best ModelCheckpoint whose
weights are loaded back from disk (recalibrated models: saved and reloaded with
plain `keras.models.load_model`) before it is evaluated on the same
oversampled training batches and on held-out data.

Writes, per configuration and backend, `gap_<config>_<backend>_<cpu|gpu>`:
`.json` (every seed's full result, the summary, the checks), `.md` (per-seed
rows, mean ± std per arm, the checks), `.png` (per-arm spread over seeds)
and `_curves.png` (per-epoch curves of the first seed).

The checks: on every seed, stock's evaluate/fit ratio >= 5; each
recommended remedy (`DEMO_ARMS` other than stock) has a ratio <= 1.5,
held-out accuracy >= 0.75, >= stock's and within 0.03 of the best arm, and is not a constant predictor; where the run
measured it, also an `eval/fit-mode` <= 1.5 (evaluate's loss over the same
checkpoint's loss as `fit` normalizes, without Dropout). One more check
follows `frozenbn.audit`: the arm of the remedy its rule gives for each
seed's recorded drift score and batch size (`arms.audit_pick`) is within
0.03 of the best arm. Nothing is asserted: the report says which are met.

Configurations:
    --tiny   smoke test: 32x32, 64 images, 1 epoch (seconds of compute).
    --small  CPU: 32x32, the shipped images (default).
    --full   GPU: 224x224, 4x more images made with `build_demo_data`
             (needs scikit-image and scikit-learn; without them it falls
             back to the shipped 32x32 images, upscaled, and says so loudly,
             in the output and in the JSON's `warnings`).

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/gap.py --small --seeds 5
    python benchmarks/gap.py --seeds 0, --arms frozenbn --frozen-lr 1e-3 --tag lr1e-3
    python benchmarks/gap.py --render benchmarks/results/gap_small_tensorflow_cpu.json --docs
"""

import argparse
import json
import os
import sys
import warnings
from typing import Optional
from typing import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

from frozenbn import _report  # noqa: E402
from frozenbn.demo import arms as arms_lib  # noqa: E402
from frozenbn.demo import images  # noqa: E402
from frozenbn.demo import plots  # noqa: E402
from frozenbn.demo import results as results_lib  # noqa: E402
from frozenbn.demo import scenario  # noqa: E402

CONFIGS = {
    "tiny": dict(pretrain_epochs=0, epochs=1, max_source=64, max_target=64),
    "small": dict(),
    "full": dict(image_size=224, pretrain_epochs=3, epochs=12, patience=3),
}

REMEDIES = tuple(a for a in arms_lib.DEMO_ARMS if a != "stock")
"""The remedies the README recommends (checked on every seed)."""

DOCS = {
    "gap_small_tensorflow_cpu.json": {
        "docs/results.md": "gap-summary",
        "docs/index.md": "gap-summary",
    },
    "gap_small_seeds5-7_tensorflow_cpu.json": {
        "docs/results.md": "gap-seeds5-7",
    },
    "gap_small_seeds8-10_tensorflow_cpu.json": {
        "docs/results.md": "gap-seeds8-10",
    },
    "gap_small_batch4_tensorflow_cpu.json": {
        "docs/results.md": "gap-batch4",
    },
    "gap_small_batch8_tensorflow_cpu.json": {
        "docs/results.md": "gap-batch8",
    },
    "gap_small_batch16_tensorflow_cpu.json": {
        "docs/results.md": "gap-batch16",
    },
    "gap_small_batch16_seeds2-3_tensorflow_cpu.json": {
        "docs/results.md": "gap-batch16-seeds2-3",
    },
}
"""Per committed results file, the pages with a block
`<!-- MARKER:begin -->...<!-- MARKER:end -->` that `--docs` rewrites from
it."""

README_TABLE = ("README.md", "gap-table")
"""The page and marker of the block that `--docs` rewrites from every file
in `DOCS`: the README's table of the arms it names, by batch size."""

README_ARMS = ("stock", "stock_recalibrated", "frozenbn", "keras_bn_frozen")

AUDIT_PICKS = ("docs/results.md", "audit-picks")
"""The page and marker of the block that `--docs` rewrites from every file
in `DOCS`: how the remedy `audit` recommends did on each seed."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (or re-renders a results file); returns 0."""
    args = _parser().parse_args(argv)
    if args.render:
        return _render(args.render, args.docs)
    name = args.config
    arms = tuple(args.arms.split(",")) if args.arms else arms_lib.GAP_ARMS
    data, notes = _data(name)
    runs = []
    for seed in args.seeds:
        config = scenario.ScenarioConfig(**CONFIGS[name], seed=seed,
                                         deterministic=True)
        if args.epochs:
            config.epochs = args.epochs
        if args.frozen_lr:
            config.frozen_learning_rate = args.frozen_lr
        if args.frozen_warmup:
            config.frozen_warmup_epochs = args.frozen_warmup
        if args.batch_size:
            # Only fine-tuning (and its evaluation and audit) change: the
            # backbone is pretrained as in the configuration.
            config.pretrain_batch_size = config.batch_size
            config.batch_size = args.batch_size
        runs.append(scenario.run_scenario(data, config, arms, verbose=1))
        print(runs[-1].table(), flush=True)
        stem = os.path.join(args.out, _common.result_stem(
            "gap", name + (f"_{args.tag}" if args.tag else ""),
            runs[0].environment))
        # Written after every seed, so a long run shows (and keeps) what it
        # has measured so far.
        _write({"benchmark": "gap", "config_name": name, "warnings": notes,
                "runs": [run.to_dict() for run in runs]}, stem)
    return 0


def summarize(runs: Sequence[results_lib.ScenarioResult]) -> dict:
    """Mean and standard deviation over seeds, per arm and quantity."""
    keys = ("ratio", "fit_loss", "eval_loss", "fit_accuracy",
            "eval_accuracy", "heldout_accuracy", "seconds_per_epoch")
    summary = {}
    for name in runs[0].names:
        arms = [run.arm(name) for run in runs]
        summary[name] = {
            key: {"mean": float(np.mean([getattr(a, key) for a in arms])),
                  "std": float(np.std([getattr(a, key) for a in arms]))}
            for key in keys
        }
        summary[name]["ratio"]["min"] = min(a.ratio for a in arms)
        summary[name]["ratio"]["max"] = max(a.ratio for a in arms)
    return summary


def checks(runs: Sequence[results_lib.ScenarioResult]) -> dict:
    """The checks of issue 14 on every seed, for the arms that ran.

    Returns:
        `{check: {"met": bool, "detail": str}}`.
    """
    ran = set(runs[0].names)
    out = {}
    if "stock" in ran:
        ratios = [run.arm("stock").ratio for run in runs]
        out["stock: eval/fit >= 5 on every seed"] = _check(
            min(ratios) >= 5, _values(ratios, "{:.3g}"))
    for name in (n for n in REMEDIES if n in ran):
        arms = [run.arm(name) for run in runs]
        best = [run.best_arm.heldout_accuracy for run in runs]
        stock = [run.arm("stock").heldout_accuracy if "stock" in ran
                 else 0.0 for run in runs]
        label = arms[0].label
        out[f"{label}: eval/fit <= 1.5 on every seed"] = _check(
            max(a.ratio for a in arms) <= 1.5,
            _values([a.ratio for a in arms], "{:.3g}"))
        if all(a.statistics_ratio is not None for a in arms):
            # The same, with fit's loss taken on the checkpoint's weights.
            ratios = [a.statistics_ratio for a in arms]
            out[f"{label}: eval/fit-mode <= 1.5 on every seed"] = _check(
                max(ratios) <= 1.5, _values(ratios, "{:.3g}"))
        held = [a.heldout_accuracy for a in arms]
        out[f"{label}: held-out >= 0.75 on every seed"] = _check(
            min(held) >= 0.75, _values(held, "{:.3f}"))
        out[f"{label}: held-out >= stock's on every seed"] = _check(
            all(h >= s for h, s in zip(held, stock)),
            _values([h - s for h, s in zip(held, stock)], "{:+.3f}"))
        out[f"{label}: within 0.03 of the best arm on every seed"] = _check(
            all(b - h <= 0.03 for h, b in zip(held, best)),
            _values([b - h for h, b in zip(held, best)], "{:.3f}")
            + " below the best")
        out[f"{label}: never a constant predictor"] = _check(
            not any(a.constant for a in arms),
            _values([a.heldout_prediction_std for a in arms], "{:.2f}")
            + " (std of held-out predictions)")
    picks = [run.audit_pick for run in runs]
    if all(arm in ran for _, arm in picks):
        below = [run.best_arm.heldout_accuracy - run.arm(arm).heldout_accuracy
                 for run, (_, arm) in zip(runs, picks)]
        out["audit's remedy (today's rule, from the recorded drift score "
            "and batch size): "
            "within 0.03 of the best arm on every seed"] = _check(
                max(below) <= 0.03, ", ".join(
                    f"{remedy} {b:.3f}" for (remedy, _), b in
                    zip(picks, below)) + " below the best")
    if "keras_bn_frozen" in ran:
        keras_held = [run.arm("keras_bn_frozen").heldout_accuracy
                      for run in runs]
        for name in (n for n in ("frozenbn", "frozenbn_recalibrated")
                     if n in ran):
            held = [run.arm(name).heldout_accuracy for run in runs]
            diff = np.mean(held) - np.mean(keras_held)
            out[f"{runs[0].arm(name).label} vs Keras BN trainable=False "
                "(mean held-out)"] = _check(
                    diff >= 0, f"{diff:+.3f}")
    return out


def _check(met: bool, detail: str) -> dict:
    return {"met": bool(met), "detail": detail}


def _values(values, pattern: str) -> str:
    return ", ".join(pattern.format(v) for v in values)


def _render(json_path: str, docs: bool) -> int:
    """Rewrites the markdown and PNGs of a results JSON (same numbers)."""
    with open(json_path, encoding="utf-8") as f:
        payload = json.load(f)
    _write(payload, os.path.splitext(json_path)[0])
    if docs:
        update_docs(json_path)
    return 0


def _runs(payload: dict) -> list:
    return [results_lib.ScenarioResult.from_dict(run)
            for run in payload["runs"]]


def _write(payload: dict, stem: str) -> None:
    runs = _runs(payload)
    payload = {**payload, "summary": summarize(runs), "checks": checks(runs)}
    _report.write_json(payload, stem + ".json")
    _common.write_text(markdown(payload), stem + ".md")
    plots.plot_seeds(runs, stem + ".png", title=_plot_title(payload))
    plots.plot_curves(runs[0], stem + "_curves.png")
    print(summary_table(payload))
    print("\n".join(check_lines(payload["checks"])))
    print(f"wrote {stem}.json, .md, .png, _curves.png")


def _plot_title(payload: dict) -> str:
    runs = payload["runs"]
    env = runs[0]["environment"]
    seeds = ", ".join(str(run["config"]["seed"]) for run in runs)
    return (f"gap benchmark ({payload['config_name']}), seeds {seeds}: one "
            f"dot per seed, bar = mean — {env['backend']} on "
            f"{env['device']}")


def summary_table(payload: dict) -> str:
    """Markdown table: per arm, mean ± std over seeds, and the range."""
    runs = _runs(payload)
    summary = payload.get("summary") or summarize(runs)
    rows = []
    for name in runs[0].names:
        s = summary[name]
        rows.append([
            runs[0].arm(name).label,
            f"{runs[0].arm(name).learning_rate:g}",
            f"{s['ratio']['mean']:.3g} ± {s['ratio']['std']:.2g} "
            f"({s['ratio']['min']:.3g}–{s['ratio']['max']:.3g})",
            f"{s['fit_accuracy']['mean']:.3f} ± {s['fit_accuracy']['std']:.3f}",
            f"{s['eval_accuracy']['mean']:.3f} ± "
            f"{s['eval_accuracy']['std']:.3f}",
            f"{s['heldout_accuracy']['mean']:.3f} ± "
            f"{s['heldout_accuracy']['std']:.3f}",
        ])
    header = ["arm", "Adam lr", "eval/fit (min–max)", "fit acc",
              "evaluate acc (same data)", "held-out acc"]
    return _report.format_table(header, rows, markdown=True)


def seed_table(payload: dict) -> str:
    """Markdown table: one row per seed and arm."""
    rows, arms = [], []
    for run in _runs(payload):
        for arm in run.arms:
            arms.append(arm)
            rows.append([str(run.config["seed"]), arm.label,
                         f"{arm.fit_loss:.4g}", f"{arm.eval_loss:.4g}",
                         f"{arm.ratio:.3g}", f"{arm.fit_accuracy:.3f}",
                         f"{arm.eval_accuracy:.3f}",
                         f"{arm.heldout_accuracy:.3f}",
                         "yes" if arm.constant else "no"])
    header = ["seed", "arm", "fit loss", "evaluate loss", "eval/fit",
              "fit acc", "evaluate acc", "held-out acc", "constant"]
    results_lib.add_statistics_column(header, rows, arms)
    return _report.format_table(header, rows, markdown=True)


def check_lines(checks_: dict) -> list:
    return [f"- {name}: {'met' if c['met'] else 'NOT met'} ({c['detail']})"
            for name, c in checks_.items()]


def markdown(payload: dict) -> str:
    """The results file's markdown: setup, summary, checks, per seed."""
    runs = payload["runs"]
    results = _runs(payload)
    first = results[0]
    cfg, data = first.config, first.data
    seconds = sum(run["seconds"] for run in runs)
    cpu = sum(run.get("cpu_seconds") or 0.0 for run in runs)
    lines = [
        f"# Gap benchmark ({payload['config_name']}): fit vs evaluate on "
        "the same data",
        "",
        *(f"**WARNING: {w}**" for w in payload.get("warnings", [])),
        f"ResNet50 {cfg['image_size']}x{cfg['image_size']} "
        f"(weights={cfg['weights']}, pretrained {cfg['pretrain_epochs']} "
        f"epochs on {data['source_train']} source images, statistics "
        "recalibrated), the bug report's Sequential head, binary "
        "cross-entropy, batch size "
        f"{cfg['batch_size']}"
        + (f" (pretraining {cfg['pretrain_batch_size']})"
           if cfg.get("pretrain_batch_size") else "")
        + f", up to {cfg['epochs']} epochs with "
        "EarlyStopping and the best ModelCheckpoint's weights loaded "
        "back from disk (recalibrated models saved and reloaded with "
        f"`keras.models.load_model`). Target: {data['target_train']} "
        f"training images ({'/'.join(map(str, data['target_train_per_class']))}"
        f" per class), oversampled to {data['target_train_oversampled']}; "
        f"{data['target_heldout']} held out. {len(runs)} seeds: "
        f"{', '.join(str(r['config']['seed']) for r in runs)}.",
        "",
        "## Mean ± std over seeds",
        "",
        summary_table(payload),
        "",
        "## Checks (issue 14)",
        "",
        *check_lines(payload["checks"]),
        "",
        "## Audit of the pretrained backbone on the target",
        "",
        "As recorded by the run, then the remedy of today's rule for the "
        "recorded score and batch size.",
        "",
        *(f"- seed {run.config['seed']}: {run.audit.get('recommendation')} "
          f"(today's rule: "
          f"{run.audit_pick[0]})"
          for run in results),
        "",
        "## Every seed",
        "",
        seed_table(payload),
        *([] if not results_lib.has_statistics_ratio(
            arm for run in results for arm in run.arms) else [
            "",
            "`eval/fit-mode`: the evaluate loss over the same checkpoint's "
            "loss on the same batches normalized as `fit` normalizes, "
            "without Dropout (the part of the gap the statistics alone "
            "make; `-`: not measured in this run)."]),
        *results_lib.footer(first.environment, seconds, cpu, cfg,
                            "Config of the first seed"),
    ]
    return "\n".join(lines)


def update_docs(json_path: str, root: Optional[str] = None) -> list:
    """Rewrites the marked summary blocks of the docs from a results file.

    Returns:
        The pages changed.
    """
    name = os.path.basename(json_path)
    if name not in DOCS:
        raise ValueError(
            f"No docs page shows {name}; the files with a docs block are "
            f"{sorted(DOCS)}. Render it without --docs, or add it to DOCS."
        )
    root = root or _common.ROOT
    with open(json_path, encoding="utf-8") as f:
        payload = json.load(f)
    block = docs_block(payload, name)
    blocks = [(page, marker, block) for page, marker in DOCS[name].items()]
    results_dir = os.path.join(root, "benchmarks", "results")
    blocks.append((*AUDIT_PICKS, audit_picks_block(results_dir)))
    blocks.append((*README_TABLE, readme_block(results_dir)))
    changed = []
    for page, marker, block in blocks:
        path = os.path.join(root, page)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = _common.replace_block(text, marker, block)
        if new != text:
            _common.write_text(new, path)
            changed.append(page)
    return changed


def audit_picks_block(results_dir: str) -> str:
    """Per seed of every results file in `DOCS`, by batch size: the remedy
    `audit`'s rule gives for the recorded drift score, and how its arm did
    against the best arm of the run."""
    rows = []
    for name, runs in _docs_runs(results_dir):
        stem = os.path.splitext(name)[0]
        for run in runs:
            remedy, arm = run.audit_pick
            if arm in run.names:
                rows.append((run.config["batch_size"], run.config["seed"],
                             stem, run.audit["max_score"], remedy,
                             run.arm(arm), run.best_arm))
    rows.sort(key=lambda row: row[:2])
    below = [best.heldout_accuracy - pick.heldout_accuracy
             for *_, pick, best in rows]
    lines = [
        f"`audit`'s remedy was within 0.03 of the best arm's held-out "
        f"accuracy on {sum(b <= 0.03 for b in below)} of {len(rows)} seeds:",
        "",
        "| batch | seed | results | worst drift score | audit says "
        "| its arm, held-out | best arm, held-out | below the best |",
        "|---|---|---|---|---|---|---|---|"]
    for (batch, seed, stem, score, remedy, pick, best), gap in zip(rows,
                                                                 below):
        lines.append(
            f"| {batch} | {seed} | [{stem}](../benchmarks/results/{stem}.md)"
            f" | {score:.2f} | {remedy} | {pick.label}, "
            f"{pick.heldout_accuracy:.3f} | {best.label}, "
            f"{best.heldout_accuracy:.3f} | {gap:.3f} |")
    return "\n".join(lines)


def _docs_runs(results_dir: str) -> list:
    """`[(name, runs)]` of every results file in `DOCS`, by name."""
    files = []
    for name in sorted(DOCS):
        with open(os.path.join(results_dir, name), encoding="utf-8") as f:
            files.append((name, _runs(json.load(f))))
    return files


def readme_block(results_dir: str) -> str:
    """The README's table: per arm of `README_ARMS`, over every seed of the
    results files in `DOCS`, at batch 32 and at smaller batches, the
    evaluate/fit loss ratio (median and worst), the held-out accuracy (mean
    and worst) and on how many seeds the arm was the best of those four.
    Below it, for each remedy whose worst eval/fit is above
    `CONSISTENT_RATIO`, that run and its eval/fit-mode, which says whether
    BN is the cause."""
    groups = {"32": [], "4-16": []}
    for file, runs in _docs_runs(results_dir):
        for run in runs:
            if all(arm in run.names for arm in README_ARMS):
                key = "32" if run.config["batch_size"] >= 32 else "4-16"
                groups[key].append((file, run))
    header = ["arm"]
    for key in groups:
        header += [f"batch {key}: eval/fit, median (worst)",
                   "held-out acc, mean (worst)", "best arm"]
    rows, worst = [], []
    for name in README_ARMS:
        row = [groups["32"][0][1].arm(name).label]
        for pairs in groups.values():
            runs = [run for _, run in pairs]
            ratios = [run.arm(name).ratio for run in runs]
            held = [run.arm(name).heldout_accuracy for run in runs]
            best = sum(max(README_ARMS, key=lambda a: run.arm(a).heldout_accuracy)
                       == name for run in runs)
            row += [f"{np.median(ratios):.3g} ({max(ratios):.3g})",
                    f"{np.mean(held):.3f} ({min(held):.3f})",
                    f"{best} of {len(runs)} seeds"]
            file, run = pairs[int(np.argmax(ratios))]
            if name != "stock" and max(ratios) > results_lib.CONSISTENT_RATIO:
                worst.append(_worst_run(file, run, run.arm(name)))
        rows.append(row)
    table = _report.format_table(header, rows, markdown=True)
    if not worst:
        return table
    return (f"{table}\n\nA remedy's worst eval/fit above "
            f"{results_lib.CONSISTENT_RATIO:g}: {'; '.join(worst)}.")


def _worst_run(file: str, run, arm) -> str:
    """One remedy's worst run: where, its eval/fit, and whether BN made it."""
    where = (f"{arm.label} at batch {run.config['batch_size']}, seed "
             f"{run.config['seed']} (`{file}`), eval/fit {arm.ratio:.3g}")
    if arm.statistics_ratio is None:
        return f"{where}, recorded without eval/fit-mode"
    cause = ("BN is not the cause" if arm.statistics_ratio
             <= results_lib.CONSISTENT_RATIO else "BN makes it")
    return f"{where} with eval/fit-mode {arm.statistics_ratio:.3g}: {cause}"


def docs_block(payload: dict, name: str) -> str:
    """The summary table and checks as the docs show them."""
    runs = payload["runs"]
    env = runs[0]["environment"]
    return "\n".join([
        f"From [`{name}`](../benchmarks/results/{name}) "
        f"({len(runs)} seeds, {env['backend']} {env['backend_version']} on "
        f"{env['device']}):",
        "",
        summary_table(payload),
        "",
        *check_lines(payload["checks"]),
    ])


def _data(name: str) -> tuple:
    if name != "full":
        return images.load_demo_data(), []
    try:
        return images.build_demo_data(
            None, image_size=64, source_train=3072, source_heldout=256,
            target_train=(600, 200), target_heldout=900), []
    except ImportError as e:
        note = (f"--full could not build its data ({e}); it fell back to "
                "the shipped 32x32 images, upscaled to 224x224. Install "
                "scikit-image and scikit-learn for the full data.")
        warnings.warn(note, stacklevel=1)
        print(f"WARNING: {note}", file=sys.stderr, flush=True)
        return images.load_demo_data(), [note]


def _parser() -> argparse.ArgumentParser:
    parser = _common.argument_parser(
        __doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Backend: set KERAS_BACKEND (tensorflow, jax, torch).")
    size = parser.add_mutually_exclusive_group()
    for config in CONFIGS:
        size.add_argument(f"--{config}", dest="config", action="store_const",
                          const=config, help=f"the {config} configuration")
    parser.set_defaults(config="small")
    parser.add_argument("--arms", default=None,
                        help="comma-separated arms (default: "
                        + ",".join(arms_lib.GAP_ARMS) + "; all: "
                        + ",".join(arms_lib.ARMS) + ")")
    _common.add_seeds_argument(parser, "5")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the maximum number of epochs")
    parser.add_argument("--frozen-lr", type=float, default=None,
                        help="override the Adam learning rate of the arms "
                        "that train with fixed statistics (default 1e-5)")
    parser.add_argument("--frozen-warmup", type=int, default=None,
                        metavar="EPOCHS",
                        help="raise that rate linearly from 0 over the first "
                        "EPOCHS epochs (default: no warm-up)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override the batch size of fine-tuning, "
                        "evaluation and the audit (pretraining keeps the "
                        "configuration's)")
    parser.add_argument("--tag", default="",
                        help="suffix of the result file names")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="only rewrite the .md and .png of a results "
                        ".json from its numbers (no training)")
    parser.add_argument("--docs", action="store_true",
                        help="with --render: also rewrite the docs "
                        "blocks that show this results file (gap.DOCS)")
    parser.add_argument("--out", default=_common.RESULTS_DIR,
                        help="output folder (default benchmarks/results/)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
