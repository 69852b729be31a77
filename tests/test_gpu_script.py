"""The GPU run script's plan: order, budgets, limits (no part is run)."""

import os
import re
import subprocess

import pytest

from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu", "run.sh")
PARTS = ["recalibrate_jax", "recalibrate_torch", "gap", "speed_jax",
         "speed_torch"]
PER_CALL_LIMIT_S = 600
PART = re.compile(r"^  part (\S+) +backend (\S+) +budget +(\d+) s: (.*)$")
HEADER = re.compile(r"TOTAL_S=(\d+) s \(setup up to (\d+) s, (\d+) s kept")


def _plan(*args, **env):
    out = subprocess.run(
        ["bash", SCRIPT, "--dry-run", *args], capture_output=True, text=True,
        env={**os.environ, **env}, timeout=30, check=False)
    return out


def _parts(stdout):
    return [PART.match(line).groups() for line in stdout.splitlines()
            if PART.match(line)]


def test_syntax():
    assert subprocess.run(["bash", "-n", SCRIPT], timeout=30,
                          check=False).returncode == 0


def test_plan_order_budgets_and_limit():
    out = _plan()
    assert out.returncode == 0, out.stderr
    parts = _parts(out.stdout)
    assert [p[0] for p in parts] == PARTS
    assert [p[1] for p in parts] == ["jax", "torch", "jax", "jax", "torch"]
    budgets = [int(p[2]) for p in parts]
    assert all(b >= 20 for b in budgets), budgets
    total, setup, reserve = map(int, HEADER.search(out.stdout).groups())
    assert sum(budgets) + setup + reserve <= total <= PER_CALL_LIMIT_S - 40
    # The gap and the JAX training step get the largest shares.
    assert sorted(budgets)[-2:] == sorted(budgets[2:4])
    commands = {p[0]: p[3] for p in parts}
    for name in ("speed_jax", "speed_torch"):
        assert "--image-size 224 --batch-size 64" in commands[name]
        assert "--warmup 2" in commands[name]
        arms = commands[name].split("--arms ")[1].split()[0].split(",")
        assert {"stock", "keras_trainable_false", "frozenbn",
                "frozenbn_trainable_false", "fused", "folded"} == set(arms)
        memory = commands[name].split("--memory-arms ")[1].split()[0]
        assert set(memory.split(",")) == set(arms)
        assert f"--memory-jobs {len(arms)}" in commands[name]
    assert "--torchvision-peer" in commands["speed_torch"]
    for name in ("recalibrate_jax", "recalibrate_torch"):
        assert "--image-size 224" in commands[name]
    assert "--seeds 0,1,2 --jobs 3" in commands["gap"]
    for command in commands.values():
        assert "--out " + os.path.join(ROOT, "benchmarks", "results", "gpu") \
            in command


def test_plan_follows_the_time_given():
    parts = _parts(_plan(TOTAL_S="300").stdout)
    assert sum(int(p[2]) for p in parts) == pytest.approx(300 - 90 - 15, abs=2)


def test_selection_and_bad_part():
    parts = _parts(_plan(PARTS="gap speed_jax", BACKENDS="jax").stdout)
    assert [p[0] for p in parts] == ["gap", "speed_jax"]
    bad = _plan(PARTS="speed_tf")
    assert bad.returncode == 2 and "unknown part" in bad.stderr


def test_download_plan_bundles_keras_and_scikit_image():
    out = subprocess.run(["bash", SCRIPT, "--download", "--dry-run"],
                         capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode == 0, out.stderr
    wanted = [line.split()[-1] for line in out.stdout.splitlines()
              if line.startswith("download: ")]
    names = {w.split("==")[0] for w in wanted}
    assert {"keras", "namex", "optree", "scikit-image"} <= names
    assert all("==" in w for w in wanted)


def _gpu_script(name):
    """A script of benchmarks/gpu/, imported as a module."""
    return testing.load_script(os.path.join("benchmarks", "gpu", name))


def test_gap_fallback_is_detected(monkeypatch):
    gap_seeds = _gpu_script("gap_seeds.py")
    assert not gap_seeds.data_fallback(["--small"])
    monkeypatch.setattr(gap_seeds.importlib.util, "find_spec",
                        lambda name: None)
    assert gap_seeds.data_fallback(["--full", "--arms", "stock"])
    assert not gap_seeds.data_fallback(["--small"])


def test_gap_seeds_runs_each_seed_it_names(monkeypatch):
    """Each folder holds the seed it is named after: the wrapper once passed
    `--seed S`, which argparse read as `--seeds S` (the first S seeds), so
    seed 0 ran nothing and `gap_seed1` held seed 0."""
    gap_seeds = _gpu_script("gap_seeds.py")
    ran = []
    monkeypatch.setattr(gap_seeds.gap, "main", lambda argv: ran.append(
        gap_seeds.gap._parser().parse_args(argv)))
    assert gap_seeds.main(["--seeds", "0,1", "--out", "/nonexistent", "--", "--tiny"]) == 0
    assert [args.seeds for args in ran] == [[0], [1]]
    assert [os.path.basename(args.out) for args in ran] == ["gap_seed0", "gap_seed1"]


def test_gap_seeds_side_by_side(monkeypatch, tmp_path):
    """`--jobs N`: one process of the wrapper per seed, at most N at once,
    each with its own seed and log; a failed seed fails the run."""
    gap_seeds = _gpu_script("gap_seeds.py")
    started, live = [], []

    class Proc:
        def __init__(self, command, stdout, stderr):
            started.append(command)
            live.append(self)
            assert len(live) <= 2  # --jobs 2
            self.returncode = 1 if "3," in command else 0

        def wait(self):
            live.remove(self)

        def kill(self):
            raise AssertionError("nothing is left to stop")

    monkeypatch.setattr(gap_seeds.subprocess, "Popen", Proc)
    code = gap_seeds.main(["--seeds", "0,1,3", "--jobs", "2", "--out",
                           str(tmp_path), "--", "--small"])
    assert code == 1  # seed 3 failed
    assert [c[c.index("--seeds") + 1] for c in started] == ["0,", "1,", "3,"]
    assert all(c[-2:] == ["--", "--small"] for c in started)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gap_seed0.log", "gap_seed1.log", "gap_seed3.log"]


def test_docs_show_the_committed_gpu_runs():
    """docs/results.md's GPU block is what summary.py makes of the
    committed folders (rerun `python benchmarks/gpu/summary.py --docs`)."""
    summary = _gpu_script("summary.py")
    block = summary.docs_block()
    assert "speed_torch_gpu.json: torch on NVIDIA H100" in block
    assert "##### gap_seed0/gap_small_jax_gpu.json: seed 0" in block
    page, marker = summary.DOCS
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    assert summary._common.replace_block(text, marker, block) == text, (
        "rerun: python benchmarks/gpu/summary.py --docs")


@pytest.mark.parametrize("argv", [[], ["--docs", "folder"], ["--doc"]])
def test_summary_takes_a_folder_or_docs(argv, capsys):
    """summary.py refuses a call that names neither a results folder nor
    `--docs`, or both, and an abbreviated option, with argparse's usage
    error instead of a traceback or a folder named `--doc`."""
    summary = _gpu_script("summary.py")
    with pytest.raises(SystemExit) as exit_info:
        summary.main(argv)
    assert exit_info.value.code == 2
    assert "usage: " in capsys.readouterr().err
