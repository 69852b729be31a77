"""Helpers shared by the benchmarks (`gap.py`, `speed.py`).

Keep this small: where results go, what they are called, which machine and
versions produced them, and how they are written.

- `ROOT`: the repository root; `RESULTS_DIR`: the default output folder,
  `benchmarks/results/`.
- `environment()`: device (GPU name or CPU model), CPU count, backend, and
  versions of Python, Keras, NumPy, the backend library and frozenbn.
- `result_stem(benchmark, config)`: `<benchmark>_<config>_<backend>_<cpu|gpu>`,
  so results of different backends and machines never overwrite each other.
- `write_json(payload, path)` (NaN/inf become `null`) and
  `write_text(text, path)`.
- `environment_line(env)`: one markdown sentence naming the machine.
- `write_result(benchmark, config_name, config, runs, out, markdown)`: the
  results JSON (with the environment) and its markdown, under `out`.
- `argument_parser(description)`: a script's parser, with no abbreviated
  options (a prefix of one option must not silently mean it);
  `add_seeds_argument(parser, default)` and `seed_list(text)`: its
  `--seeds`, one meaning in every script.
- `replace_block(text, marker, block)`: a docs page with its generated
  block `<!-- MARKER:begin -->...<!-- MARKER:end -->` replaced.

Importing this module puts the repository root on `sys.path`, so a
benchmark run as `python benchmarks/x.py` imports the checkout's frozenbn.
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from frozenbn._report import write_json  # noqa: E402
from frozenbn.demo.machine import environment_info  # noqa: E402
from frozenbn.demo.machine import environment_line  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")

__all__ = ["RESULTS_DIR", "ROOT", "add_seeds_argument", "argument_parser", "environment", "environment_line",
           "replace_block", "result_stem", "seed_list", "write_json", "write_result",
           "write_text"]


def argument_parser(description: str, **kwargs) -> argparse.ArgumentParser:
    """A benchmark's command-line parser that takes option names whole.

    argparse would otherwise read a prefix as the one option it starts:
    `gap.py --seed 1` meant `--seeds 1`, i.e. seed 0, and `--seed 0` ran
    nothing at all.
    """
    return argparse.ArgumentParser(description=description, allow_abbrev=False,
                                   **kwargs)


def add_seeds_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """Adds `--seeds` (read by `seed_list`) to a benchmark's parser."""
    parser.add_argument("--seeds", default=default, type=seed_list,
                        help=f"N (seeds 0..N-1) or a comma-separated list; "
                        f"one seed S alone is 'S,' (default {default})")


def seed_list(text: str) -> list:
    """A `--seeds` value, as every benchmark reads it.

    N >= 1 is the first N seeds (0..N-1); a comma-separated list is those
    seeds (`"3,"` is seed 3 alone). Anything naming no seed is an error.
    """
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no seed: give a count N >= 1 (seeds 0..N-1) or "
            "a comma-separated list such as 0,1 or 3,")
    return seeds


def environment() -> dict:
    """The machine, backend and versions (see `environment_info`)."""
    return environment_info()


def result_stem(benchmark: str, config: str, env: dict = None) -> str:
    """File name stem, e.g. `gap_small_tensorflow_cpu`."""
    env = env or environment()
    parts = [benchmark, config, env["backend"], env["device_kind"]]
    return "_".join(p for p in parts if p)


def write_text(text: str, path: str) -> str:
    """Writes `text` to `path`, creating the folder; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def write_result(benchmark: str, config_name: str, config: dict,
                 runs: list, out: str, markdown) -> str:
    """Writes `<stem>.json` (the runs, the configuration and the
    environment) and `<stem>.md` (`markdown(result)`) to `out`; returns the
    result as written."""
    result = {"benchmark": benchmark, "config_name": config_name,
              "config": config, "environment": environment(), "runs": runs}
    stem = os.path.join(out, result_stem(benchmark, config_name,
                                         result["environment"]))
    write_json(result, stem + ".json")
    write_text(markdown(result), stem + ".md")
    print(f"wrote {stem}.json and .md")
    return result


def replace_block(text: str, marker: str, block: str) -> str:
    """`text` with the block between the `marker` comments replaced."""
    pattern = re.compile(rf"(<!-- {marker}:begin -->\n)(?:.*?\n)?"
                         rf"(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"No <!-- {marker}:begin/end --> block found.")
    return pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2),
                       text)
