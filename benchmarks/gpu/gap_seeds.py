"""Runs `benchmarks/gap.py` once per seed and says loudly which data it used.

`gap.py --full` cuts its 224x224 data from scikit-image's sample
photographs; without scikit-image it falls back to the 384 shipped 32x32
images, upscaled, with one quiet line. On the GPU machine that would change
what the numbers mean, so this wrapper checks first: a fallback prints a
WARNING banner before and after each seed and is written into each result
JSON (`data_fallback`, `warnings`). Each seed writes to its own folder,
`<out>/gap_seed<N>/`, as soon as it ends. `--jobs N` runs N seeds at once,
one process each (log: `<out>/gap_seed<N>.log`): on a large GPU the small
scenario is bound by one CPU core, so seeds side by side take about the
time of one (their `s/epoch` columns are then not timings to compare).

Usage:
    KERAS_BACKEND=jax python benchmarks/gpu/gap_seeds.py --seeds 0,1 \
        --out benchmarks/results/gpu -- --small --arms stock,frozenbn
"""

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys

_BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _BENCHMARKS)
import _common  # noqa: E402,F401  (puts the checkout first on sys.path)
import gap  # noqa: E402

from frozenbn._report import write_json  # noqa: E402

FALLBACK = ("gap.py --full without scikit-image: the data is the 384 "
            "shipped 32x32 images upscaled, NOT the 224x224 patches cut "
            "from the photographs")


def data_fallback(gap_args: list) -> bool:
    """Whether `gap.py` with these arguments would fall back to the shipped data."""
    return "--full" in gap_args and importlib.util.find_spec("skimage") is None


def _banner(text: str) -> None:
    print(f"{'!' * 72}\nWARNING: {text}\n{'!' * 72}", flush=True)


def main(argv=None) -> int:
    parser = _common.argument_parser(__doc__.split("\n\n")[0])
    _common.add_seeds_argument(parser, "0,1")
    parser.add_argument("--out", default=os.path.join(_common.RESULTS_DIR, "gpu"))
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds run at once, one process each")
    parser.add_argument("gap_args", nargs="*",
                        help="passed to gap.py (after --)")
    args = parser.parse_args(argv)
    if args.jobs > 1 and len(args.seeds) > 1:
        return _side_by_side(args)
    fallback = data_fallback(args.gap_args)
    for seed in args.seeds:
        out = os.path.join(args.out, f"gap_seed{seed}")
        if fallback:
            _banner(FALLBACK)
        print(f"== gap.py seed {seed} -> {out}", flush=True)
        # "S," is the list of seed S alone; "S" would be the first S seeds.
        gap.main([*args.gap_args, "--seeds", f"{seed},", "--out", out])
        for path in glob.glob(os.path.join(out, "gap_*.json")):
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
            payload["seed"] = seed
            payload["data_fallback"] = fallback
            payload["warnings"] = [FALLBACK] if fallback else []
            write_json(payload, path)
        if fallback:
            _banner(FALLBACK)
    return 0


def _side_by_side(args) -> int:
    """Runs each seed in its own process of this script, `jobs` at a time."""
    os.makedirs(args.out, exist_ok=True)
    waiting, running, failed = list(args.seeds), {}, []
    # Stopped at a time budget: stop the seeds too (what they wrote stays).
    handler = signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    try:
        _run(args, waiting, running, failed)
    finally:
        signal.signal(signal.SIGTERM, handler)
        for proc, log in running.values():
            proc.kill()
            log.close()
    return 1 if failed else 0


def _run(args, waiting, running, failed) -> None:
    while waiting or running:
        while waiting and len(running) < args.jobs:
            seed = waiting.pop(0)
            log = open(os.path.join(args.out, f"gap_seed{seed}.log"), "w",
                       encoding="utf-8")
            command = [sys.executable, os.path.abspath(__file__), "--seeds",
                       f"{seed},", "--out", args.out, "--", *args.gap_args]
            print(f"== seed {seed}: started (log gap_seed{seed}.log)",
                  flush=True)
            running[seed] = (subprocess.Popen(command, stdout=log,
                                              stderr=subprocess.STDOUT), log)
        seed = next(iter(running))
        proc, log = running.pop(seed)
        proc.wait()
        log.close()
        print(f"== seed {seed}: exit {proc.returncode}", flush=True)
        if proc.returncode:
            failed.append(seed)


if __name__ == "__main__":
    sys.exit(main())
