"""Runs `benchmarks/gap.py` once per seed and says loudly which data it used.

`gap.py --full` cuts its 224x224 data from scikit-image's sample
photographs; without scikit-image it falls back to the 384 shipped 32x32
images, upscaled, with one quiet line. On the GPU machine that would change
what the numbers mean, so this wrapper checks first: a fallback prints a
WARNING banner before and after each seed and is written into each result
JSON (`data_fallback`, `warnings`). Each seed writes to its own folder,
`<out>/gap_seed<N>/`, as soon as it ends.

Usage:
    KERAS_BACKEND=jax python benchmarks/gpu/gap_seeds.py --seeds 0,1 \
        --out benchmarks/results/gpu -- --small --arms stock,frozenbn
"""

import glob
import importlib.util
import json
import os
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
    parser.add_argument("gap_args", nargs="*",
                        help="passed to gap.py (after --)")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
