"""The short summary of a GPU run: what each part did and its key numbers.

Reads the results folder of `benchmarks/gpu/run.sh` (parts.tsv and the
JSON files of speed.py, speed_recalibrate.py, gap.py and environment.py;
partial files included), prints a few markdown tables and writes them to
`summary.md` there. The device tool returns only the end of a command's
output, so this is printed last. Any `KERAS_BACKEND` will do (it reads
files only).

Usage:
    python benchmarks/gpu/summary.py RESULTS_DIR
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common  # noqa: E402  (puts the checkout first on sys.path)

from frozenbn._report import fmt  # noqa: E402
from frozenbn._report import format_table  # noqa: E402


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
    return [f"### {os.path.basename(path)}: recalibrate / predict (paired) "
            f"{fmt(r['paired_ratio_vs_predict']['recalibrate'])} (target <= "
            f"{r['target']['recalibrate_vs_predict_at_most']}, met "
            f"{r['target']['met']}); predict {fmt(r['seconds']['predict']['median'])}"
            f" s per call over {r['config']['images']} images", ""]


def gap(path: str) -> list:
    r = _load(path)
    lines = [f"### {os.path.relpath(path, os.path.dirname(os.path.dirname(path)))}"
             f": seed {r.get('seed')}", ""]
    lines += [f"**WARNING: {w}**" for w in r.get("warnings", [])]
    rows = [[a["name"], fmt(a["ratio"]), fmt(a["fit_accuracy"]),
             fmt(a["heldout_accuracy"]), fmt(a["seconds_per_epoch"])]
            for a in r.get("arms", [])]
    lines += _table(["arm", "eval/fit", "fit acc", "held-out acc", "s/epoch"],
                    rows)
    lines += [f"- {name}: {'met' if c['met'] else 'NOT met'} ({c['detail']})"
              for name, c in r.get("targets", {}).items()]
    return lines + [""]


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
                            (os.path.join("gap_seed*", "gap_*.json"), gap)):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                lines += reader(path)
            except (KeyError, TypeError, ValueError) as e:
                lines += [f"{os.path.basename(path)}: unreadable ({e!r})", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    folder = (argv or sys.argv[1:])[0]
    text = summary(folder)
    _common.write_text(text, os.path.join(folder, "summary.md"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
