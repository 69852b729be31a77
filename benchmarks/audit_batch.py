"""What `frozenbn.audit` says about the scenario's backbone at each batch size.

The backbone of `frozenbn demo` (ResNet50 pretrained on the source domain,
statistics recalibrated), audited on the target's training images at
several batch sizes. Per seed and batch size this records the worst layer
drift score, measured as `fit` normalizes (with batch statistics, which
depend on the batch size), and the remedy `audit` recommends (under
`frozenbn._advice.SMALL_BATCH` it is `freeze` whatever the score). The gap
benchmark measures which remedy learns best at batch 32 (`gap.py`) and at
batch 4, 8 and 16 (`gap.py --batch-size N`); this shows what `audit`'s rule
says from what it measures before any fine-tuning.

Writes `audit_batch_<config>_<backend>_<cpu|gpu>.{json,md}` to `--out`
(default `benchmarks/results/`); `--render JSON --docs` rewrites the
markdown and docs/results.md's table from a results file. No number is
asserted.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/audit_batch.py --seeds 0,1,2,3,4
    python benchmarks/audit_batch.py --render \
        benchmarks/results/audit_batch_small_tensorflow_cpu.json --docs
    python benchmarks/audit_batch.py --tiny
"""

import json
import os
import sys
from typing import Optional
from typing import Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

from frozenbn.audit import audit  # noqa: E402
from frozenbn.demo import images  # noqa: E402
from frozenbn.demo import scenario  # noqa: E402

DOCS_PAGE = os.path.join("docs", "results.md")
DOCS_MARKER = "audit-batch"

CONFIGS = {
    "tiny": dict(pretrain_epochs=0, max_source=64, max_target=64),
    "small": dict(),
}


def run(config: scenario.ScenarioConfig, batch_sizes: Sequence[int],
        data) -> dict:
    """One seed: the backbone pretrained as in the scenario, audited at
    every batch size."""
    source, target, _ = scenario.prepare_data(data, config)
    backbone, _ = scenario.pretrained_backbone(config, source)
    x = target.train.x
    rows = []
    for batch_size in batch_sizes:
        report = audit(backbone, x, batch_size=batch_size)
        rows.append({
            "batch_size": batch_size,
            "max_score": max(a.score for a in report.layers),
            "remedy": report.recommendation.remedy,
            "recommendation": str(report.recommendation),
        })
    return {"seed": config.seed, "audits": rows}


def table(result: dict) -> str:
    """One row per seed: per batch size, the worst drift score as `fit`
    normalizes and the remedy `audit` recommends."""
    sizes = [row["batch_size"] for row in result["runs"][0]["audits"]]
    lines = ["| seed | " + " | ".join(f"batch {n}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for run_ in result["runs"]:
        cells = [f"{row['max_score']:.2f}: {row['remedy']}"
                 for row in run_["audits"]]
        lines.append(f"| {run_['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_LEGEND = (
    "`batch N`: the worst layer drift score with the layers normalizing as "
    "`fit` does at batch N, and the remedy `audit` recommends.")


def markdown(result: dict) -> str:
    """The results file's markdown: what was run, the table, the machine."""
    return "\n".join([
        f"# What audit says at each batch size: {result['config_name']}", "",
        "ResNet50 pretrained on the source domain as in the gap scenario, "
        "audited on the target's training images. " + _LEGEND, "",
        table(result), "",
        _common.environment_line(result["environment"]), ""])


def docs_block(result: dict, name: str) -> str:
    """The table as docs/results.md shows it."""
    env = result["environment"]
    return "\n".join([
        f"From [`{name}`](../benchmarks/results/{name}) "
        f"({len(result['runs'])} seeds, {env['backend']} "
        f"{env['backend_version']} on {env['device']}). {_LEGEND}", "",
        table(result)])


def update_docs(json_path: str) -> None:
    """Rewrites the `audit-batch` block of `DOCS_PAGE` from a results
    file."""
    with open(json_path, encoding="utf-8") as f:
        result = json.load(f)
    path = os.path.join(_common.ROOT, DOCS_PAGE)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = _common.replace_block(
        text, DOCS_MARKER, docs_block(result, os.path.basename(json_path)))
    if new != text:
        _common.write_text(new, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs every seed, or re-renders a results file; writes JSON and
    markdown."""
    parser = _common.argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", dest="config", action="store_const",
                        const="tiny", default="small")
    _common.add_seeds_argument(parser, "0,1,2,3,4")
    parser.add_argument("--batch-sizes", default="4,8,16,32")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="only rewrite the .md of a results .json")
    parser.add_argument("--docs", action="store_true",
                        help=f"with --render: also rewrite {DOCS_PAGE}'s "
                        f"{DOCS_MARKER} block")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            result = json.load(f)
        _common.write_text(markdown(result),
                           os.path.splitext(args.render)[0] + ".md")
        if args.docs:
            update_docs(args.render)
        return 0
    data = images.load_demo_data()
    sizes = [int(n) for n in args.batch_sizes.split(",")]
    runs = []
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        config = scenario.ScenarioConfig(**CONFIGS[args.config], seed=seed,
                                         curves=False)
        runs.append(run(config, sizes, data))
    result = _common.write_result("audit_batch", args.config,
                                  CONFIGS[args.config], runs, args.out,
                                  markdown)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
