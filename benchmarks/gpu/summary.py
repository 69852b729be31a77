"""The short summary of a GPU run: what each part did and its key numbers.

Reads the results folder of `benchmarks/gpu/run.sh` (parts.tsv and the
JSON files of speed.py, speed_recalibrate.py, gap.py and environment.py;
partial files included), prints a few markdown tables and writes them to
`summary.md` there. The device tool returns only the end of a command's
output, so this is printed last. Any `KERAS_BACKEND` will do (it reads
files only).

`--docs` rewrites the block of docs/results.md that shows the
committed GPU runs (`COMMITTED`) from their files.

Usage:
    python benchmarks/gpu/summary.py RESULTS_DIR
    python benchmarks/gpu/summary.py --docs
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common  # noqa: E402  (puts the checkout first on sys.path)
import gap  # noqa: E402

from frozenbn._report import fmt  # noqa: E402
from frozenbn._report import format_table  # noqa: E402


COMMITTED = (
    os.path.join("benchmarks", "results", "gpu", "2026-11-27", "call1"),
    os.path.join("benchmarks", "results", "gpu", "2026-11-27", "call2"),
)
"""The committed GPU runs (one folder per device call), in the order the
docs show them."""

DOCS = ("docs/results.md", "gpu-results")
"""The page and marker of the block `--docs` rewrites."""


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _table(header, rows) -> list:
    return [format_table(header, rows, markdown=True), ""] if rows else []


def parts(folder: str) -> list:
    path = os.path.join(folder, "parts.tsv")
    if not os.path.exists(path):
        return ["No parts.tsv: no part ran.", ""]
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return _table(["part", "backend", "budget s", "took s", "exit", "what"],
                  rows)


def speed(path: str) -> list:
    r = _load(path)
    env, train = r["machine"], r.get("train", {})
    lines = [f"### {os.path.basename(path)}: {env['backend']} on "
             f"{env['device']}{'' if r.get('complete') else ' (PARTIAL)'}",
             ""]
    exact, fused = r.get("exactness", {}), r.get("fused_exactness", {})
    if exact or fused:
        lines += [f"Exactness (max abs difference / max abs output): frozenbn "
                  f"vs stock Keras BN {fmt(exact.get('model_max_rel_diff'))}; "
                  f"fused vs unfused {fmt(fused.get('max_rel_diff'))}.", ""]
    memory = r.get("memory", {}).get("arms", {})
    rows = []
    for name, arm in train.get("arms", {}).items():
        mem = memory.get(name, {})
        rows.append([
            name, f"{arm['median']:.1f}",
            fmt(train["paired_ratios_vs_stock"].get(name)),
            fmt(train["paired_ratios_vs_keras_trainable_false"].get(name)),
            fmt(train["paired_ratios_vs_folded"].get(name)),
            fmt(mem.get("device_peak_mb")),
        ])
    lines += _table(["train arm", "images/s", "vs stock", "vs keras tf=False",
                     "vs folded", "device peak MB"], rows)
    lines += compiled(r)
    inference = r.get("inference", {})
    lines += _table(
        ["inference arm", "images/s", "vs stock"],
        [[name, f"{arm['median']:.1f}",
          fmt(inference["paired_ratios_vs_stock"].get(name))]
         for name, arm in inference.get("arms", {}).items()])
    peer = r.get("torchvision_peer", {})
    if "skipped" in peer:
        lines += [f"torchvision peer: skipped ({peer['skipped']})", ""]
    lines += _table(
        ["torchvision peer", "images/s", "vs torchvision_bn",
         "device peak MB"],
        [[name, f"{arm['median']:.1f}",
          fmt(peer["ratios_vs_torchvision_bn"].get(name)),
          fmt(peer.get("device_peak_mb", {}).get(name))]
         for name, arm in peer.get("arms", {}).items()])
    lines += _table(
        ["target", "value", "at least", "met"],
        [[name, fmt(t["value"]), str(t["target"]), str(t["met"])]
         for name, t in r.get("targets", {}).items()
         if t["value"] is not None])
    return lines


def recalibrate(path: str) -> list:
    r = _load(path)
    head = f"### {os.path.basename(path)}: "
    tail = (f"predict {fmt(r['seconds']['predict']['median'])} s per call "
            f"over {r['config']['images']} images")
    if "paired_ratio_vs_floor" not in r:  # written before the floor arm
        return [head + "recalibrate / predict (paired) "
                f"{fmt(r['paired_ratio_vs_predict']['recalibrate'])} (target "
                f"<= {r['target']['recalibrate_vs_predict_at_most']}, met "
                f"{r['target']['met']}); " + tail, ""]
    floor, predict = r["paired_ratio_vs_floor"], r["paired_ratio_vs_predict"]
    rows = [[arm, fmt(r["seconds"][arm]["median"]), fmt(floor.get(arm)),
             fmt(predict.get(arm)), fmt(r["first_call_s"].get(arm))]
            for arm in r["seconds"]]
    return [head + tail + f"; audit / its floor (floor + predict) "
            f"{fmt(r['audit_paired_ratio_vs_its_floor'])}", ""] + _table(
        ["arm", "s per call", "vs floor (paired)", "vs predict (paired)",
         "first call s"], rows)


def compiled(r: dict) -> list:
    """The compiled train step per arm (speed.py on JAX) and the check
    that compilation stayed out of the timed samples."""
    train = r.get("train", {})
    rows = [[name, str(p["kernels"]), str(p["ops"].get("fusion", 0)),
             str(p["ops"].get("custom-call", 0)), fmt(p["flops"] / 1e9),
             fmt(p["bytes_accessed"] / 2**20)]
            for name, p in train.get("compiled", {}).items()]
    lines = _table(["compiled step", "kernels", "fusions", "custom calls",
                    "GFLOP", "MiB accessed"], rows)
    rows = [[name, " + ".join(fmt(s) for s in c["warmup_s"] or []),
             fmt(c["first_vs_median"]),
             "n/a" if c["timed_compiles"] is None else
             "{traces} traces, {compiles} compiles".format(**c["timed_compiles"])]
            for name, c in train.get("warmup_check", {}).items()]
    return lines + _table(["train arm", "warm-up samples s",
                           "first timed / median", "compiles while timed"],
                          rows)


def gap_result(path: str) -> list:
    """A gap result's per-arm table and checks, as `gap.py` writes them."""
    r = _load(path)
    seeds = [run["config"]["seed"] for run in r["runs"]]
    lines = [f"### {os.path.relpath(path, os.path.dirname(os.path.dirname(path)))}"
             f": seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}", ""]
    lines += [f"**WARNING: {w}**" for w in r.get("warnings", [])]
    return lines + [gap.summary_table(r), "", *gap.check_lines(r["checks"]), ""]


def warnings(folder: str) -> list:
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "environment_*.json"))):
        env = _load(path)
        out += [f"- {env['backend']}: WARNING {w}" for w in env["warnings"]]
    return out + [""] if out else []


def summary(folder: str) -> str:
    lines = ["## GPU run summary", ""] + parts(folder) + warnings(folder)
    for pattern, reader in (("speed_*.json", speed),
                            ("recalibrate_*.json", recalibrate),
                            (os.path.join("gap_seed*", "gap_*.json"), gap_result)):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                lines += reader(path)
            except (KeyError, TypeError, ValueError) as e:
                lines += [f"{os.path.basename(path)}: unreadable ({e!r})", ""]
    return "\n".join(lines)


PEERS = (("stock", "torchvision_bn"),
         ("keras_trainable_false", "torchvision_frozen_bn2d"))
"""Keras arm and its torchvision peer, both in one speed file (one run):
`FrozenBatchNorm2d` keeps its affine parameters as buffers, as Keras
`trainable=False` does."""


def peers(r: dict) -> list:
    """Keras's arms against their torchvision peers, within one speed file."""
    train, peer = r.get("train", {}).get("arms", {}), r.get(
        "torchvision_peer", {}).get("arms", {})
    rows = [[f"Keras on {r['machine']['backend']}, {a}",
             f"{train[a]['median']:.1f}", f"torchvision, {b}",
             f"{peer[b]['median']:.1f}",
             fmt(train[a]["median"] / peer[b]["median"])]
            for a, b in PEERS if a in train and b in peer]
    return _table(["Keras arm", "images/s", "torchvision peer", "images/s",
                   "ratio"], rows)


def docs_block(root: str = _common.ROOT) -> str:
    """The committed GPU runs as the docs show them: each folder's summary
    under its own heading, with Keras against the torchvision peer where one
    speed file holds both."""
    lines = []
    for folder in COMMITTED:
        path = os.path.join(root, folder)
        env = _load(sorted(glob.glob(os.path.join(path, "environment_*.json")))[0])
        lines += [f"#### `{folder}`: {env['device']}", ""]
        body = summary(path).split("\n")[2:]
        lines += [line.replace("### ", "##### ", 1) if line.startswith("### ")
                  else line for line in body] + [""]
        for speed_path in sorted(glob.glob(os.path.join(path, "speed_*.json"))):
            table = peers(_load(speed_path))
            if table:
                lines += [f"##### Keras against torchvision, "
                          f"{os.path.basename(speed_path)} (training "
                          "images/s, one run)", ""] + table
    return "\n".join(lines).rstrip("\n")


def update_docs(root: str = _common.ROOT) -> bool:
    """Rewrites the docs block from the committed runs; True if it changed."""
    path = os.path.join(root, DOCS[0])
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = _common.replace_block(text, DOCS[1], docs_block(root))
    if new != text:
        _common.write_text(new, path)
    return new != text


def main(argv=None) -> int:
    parser = _common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?",
                        help="a results folder of benchmarks/gpu/run.sh")
    parser.add_argument("--docs", action="store_true",
                        help=f"rewrite the GPU block of {DOCS[0]} from the "
                        "committed runs")
    args = parser.parse_args(argv)
    if args.docs == (args.folder is not None):
        parser.error("give a results folder or --docs, not both")
    if args.docs:
        print(f"{DOCS[0]}: {'rewritten' if update_docs() else 'unchanged'}")
        return 0
    text = summary(args.folder)
    _common.write_text(text, os.path.join(args.folder, "summary.md"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
