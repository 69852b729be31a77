"""Smoke test of benchmarks/gap.py at its `--tiny` size."""

import importlib.util
import json
import os

import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_gap():
    path = os.path.join(REPO, "benchmarks", "gap.py")
    spec = importlib.util.spec_from_file_location("gap_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gap_tiny_writes_json_markdown_and_plot(tmp_path, capsys):
    gap = _load_gap()
    # One trained arm and one derived from it keep this to one ResNet50
    # trace; every arm's preparation is tested in test_demo.py.
    code = gap.main(["--tiny", "--arms", "stock,stock_recalibrated",
                     "--out", str(tmp_path)])
    assert code == 0
    kind = "gpu" if json.loads(
        next(tmp_path.glob("*.json")).read_text()
    )["environment"]["accelerator"] else "cpu"
    stem = tmp_path / f"gap_tiny_{keras.config.backend()}_{kind}"
    for suffix in (".json", ".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    payload = json.loads(stem.with_suffix(".json").read_text())
    assert payload["benchmark"] == "gap"
    assert payload["config_name"] == "tiny"
    assert [arm["name"] for arm in payload["arms"]] == [
        "stock", "stock_recalibrated"]
    for arm in payload["arms"]:
        for key in ("fit_loss", "fit_accuracy", "eval_loss", "ratio",
                    "heldout_accuracy", "seconds_per_epoch", "curves"):
            assert key in arm
    assert "stock ratio > 10" in payload["targets"]
    env = payload["environment"]
    assert env["device"] and env["keras"] and env["backend_version"]
    markdown = stem.with_suffix(".md").read_text()
    assert "## Targets" in markdown and env["device"] in markdown
    assert "eval/fit" in capsys.readouterr().out
