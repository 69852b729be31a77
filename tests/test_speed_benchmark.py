"""Smoke test of benchmarks/speed.py: it runs and writes a complete report.

Runs the script at its `--tiny` size (a two-block CNN, 16x16 images) in a
subprocess under the current `KERAS_BACKEND`. No timing is asserted: this
only checks that every section runs and the JSON has the expected keys.
The script is split by job (speed_arms, speed_timing, speed_checks,
speed_memory, speed_peer, speed_report); this runs them all through it.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras

from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "speed.py")


def _run(tmp_path, *args):
    env = dict(os.environ, KERAS_BACKEND=keras.config.backend())
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--tiny", "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_speed_tiny_writes_report(tmp_path):
    _run(tmp_path, "--tag", "speed_smoke", "--skip", "memory")
    stem = tmp_path / "speed_smoke"
    with open(f"{stem}.json") as f:
        result = json.load(f)
    assert os.path.getsize(f"{stem}.md") > 0
    assert os.path.getsize(f"{stem}.png") > 0

    for key in (
        "config", "machine", "exactness", "train", "inference", "convert",
        "targets",
    ):
        assert key in result, key
    assert result["machine"]["backend"] == keras.config.backend()
    assert result["config"]["model"] == "mini"
    train = result["train"]
    assert set(train["arms"]) == {
        "stock",
        "keras_trainable_false",
        "naive_frozen",
        "frozenbn",
        "frozenbn_trainable_false",
        "fused",
        "folded",
    }
    for arm in train["arms"].values():
        assert {"median", "q1", "q3", "min", "max", "samples"} <= set(arm)
        assert len(arm["samples"]) == result["config"]["repeats"]
        assert len(arm["cpu_samples"]) == result["config"]["repeats"]
        assert arm["median"] > 0
    assert train["ratios_vs_stock"]["stock"] == 1.0
    assert "fused" in train["paired_ratios_vs_keras_trainable_false"]
    assert train["paired_ratios_vs_folded"]["folded"] == 1.0
    assert {"stock", "frozenbn", "folded"} <= set(result["inference"]["arms"])
    assert set(result["convert"]["arms"]) == {
        "convert", "clone_model", "clone_model_set_weights"
    }
    assert set(result["targets"]) == {
        "train_frozenbn_vs_stock",
        "train_frozenbn_vs_keras_trainable_false",
        "train_fused_vs_stock",
        "train_fused_vs_keras_trainable_false",
        "train_fused_vs_folded_floor",
        "infer_folded_vs_stock",
        "convert_speed_vs_clone_model",
        "memory_frozenbn_over_fused",
    }
    assert result["targets"]["memory_frozenbn_over_fused"]["met"] is None
    # The frozen layer's forward is Keras's inference op on every backend.
    assert result["exactness"]["model_max_abs_diff"] == 0.0
    assert result["exactness"]["num_bn_layers"] == 2
    # fuse: both pairs fused, outputs equal to float32 rounding.
    assert result["fused_exactness"]["fused"] == 2
    assert result["fused_exactness"]["max_rel_diff"] <= 1e-5
    assert result["fold_exactness"]["max_rel_diff"] <= 1e-5
    # Compilation stayed out of the timed samples: JAX counted no trace or
    # compile while an arm was timed (other backends cannot count them).
    for section in (train, result["inference"]):
        assert set(section["warmup_check"]) == set(section["arms"])
        for check in section["warmup_check"].values():
            assert len(check["warmup_s"]) == result["config"]["warmup"]
            assert check["first_vs_median"] > 0
            if keras.config.backend() == "jax":
                assert check["timed_compiles"] == {"traces": 0, "compiles": 0}
            else:
                assert check["timed_compiles"] is None
    if keras.config.backend() == "jax":
        compiled = train["compiled"]
        assert set(compiled) == set(train["arms"])
        assert all(p["kernels"] > 0 for p in compiled.values())
        # No BN at all: fewer FLOPs than stock BN's batch statistics.
        assert compiled["folded"]["flops"] < compiled["stock"]["flops"]
    else:
        assert "compiled" not in train


def test_entry_ops_counts_the_kernels_of_an_hlo_module():
    speed_compiled = testing.load_script("benchmarks/speed_compiled.py")
    hlo = "\n".join([
        "%fused_computation (p: f32[2]) -> f32[2] {",
        "  %p = f32[2]{0} parameter(0)",
        "  ROOT %n = f32[2]{0} negate(%p)",
        "}",
        "ENTRY %main (a: f32[2], b: f32[2,2]) -> (f32[2], f32[2]) {",
        "  %a = f32[2]{0} parameter(0)",
        "  %b = f32[2,2]{1,0} parameter(1)",
        "  %f = f32[2]{0} fusion(%a), kind=kLoop, calls=%fused_computation",
        '  %c = (f32[2]{0}, s8[0]{0}) custom-call(%b, %f), '
        'custom_call_target="__cublas$gemm"',
        "  %g = f32[2]{0} get-tuple-element(%c), index=0",
        "  ROOT %t = (f32[2]{0}, f32[2]{0}) tuple(%f, %g)",
        "}",
    ])
    ops = speed_compiled.entry_ops(hlo)
    # The fused computation's negate is inside a kernel, not one of its own.
    assert ops["ops"] == {"custom-call": 1, "fusion": 1,
                          "get-tuple-element": 1, "parameter": 2, "tuple": 1}
    assert ops["kernels"] == 2
    assert ops["custom_calls"] == {"__cublas$gemm": 1}


def test_speed_memory_and_torchvision_peer(tmp_path):
    # Step memory in a fresh process per arm. Off the torch backend, or
    # without torchvision, the peer is skipped with a reason instead of
    # failing the run.
    _run(tmp_path, "--tag", "peer", "--torchvision-peer",
         "--skip", "train,inference,convert", "--memory-arms", "fused,folded",
         "--memory-jobs", "2")
    with open(tmp_path / "peer.json") as f:
        result = json.load(f)
    peer = result["torchvision_peer"]
    if keras.config.backend() != "torch":
        assert peer == {"skipped": "backend is not torch"}
    elif importlib.util.find_spec("torchvision") is None:
        assert list(peer) == ["skipped"]
        assert peer["skipped"].startswith("torchvision not importable: ")
    else:
        assert set(peer["arms"]) == {"torchvision_bn", "torchvision_frozen_bn2d"}
    memory = result["memory"]["arms"]
    assert set(memory) == {"fused", "folded"}  # two processes side by side
    fused = memory["fused"]
    assert fused["rss_before_mb"] > 0 and fused["process_peak_rss_mb"] > 0
    if fused["step_peak_rss_mb"] is not None:  # Linux: the step's own peak
        assert fused["step_peak_rss_mb"] >= fused["rss_before_mb"] * 0.5
    assert os.path.getsize(tmp_path / "peer.png") > 0


def test_recalibrate_benchmark_tiny_writes_report(tmp_path):
    """benchmarks/speed_recalibrate.py at a tiny size: it runs and writes."""
    speed_recalibrate = testing.load_script("benchmarks/speed_recalibrate.py")
    result = speed_recalibrate.bench_recalibrate(
        "mini", 16, 32, 16, 2, True, str(tmp_path)
    )
    arms = {"predict", "floor", "recalibrate", "audit", "recalibrate_eager"}
    assert set(result["paired_ratio_vs_predict"]) == arms
    assert set(result["paired_ratio_vs_floor"]) == arms
    assert result["paired_ratio_vs_floor"]["floor"] == 1.0
    assert all(r > 0 for r in result["paired_ratio_vs_predict"].values())
    assert len(result["targets"]) == 3
    written = sorted(p.suffix for p in tmp_path.iterdir())
    assert written == [".json", ".md", ".png"]
    with open(next(tmp_path.glob("*.json"))) as f:
        assert json.load(f)["environment"]["backend"] == keras.config.backend()


def test_docs_show_the_committed_recalibrate_runs():
    """docs/results.md's table of the statistics pass against its floor
    is the one generated from the committed results files."""
    speed_recalibrate = testing.load_script("benchmarks/speed_recalibrate.py")
    block = speed_recalibrate.docs_block()
    testing.assert_block_current(
        speed_recalibrate, speed_recalibrate.DOCS, block,
        "python benchmarks/speed_recalibrate.py --docs")
    rows = [line for line in block.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(
        [n for n in os.listdir(os.path.join(ROOT, "benchmarks", "results"))
         if n.startswith("recalibrate_") and n.endswith("_cpu.json")])
