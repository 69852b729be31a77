"""Smoke test of benchmarks/audit_batch.py at its `--tiny` size, and its docs
block."""

import json
import os

import keras
import pytest

from frozenbn._advice import DRIFT_SCORE
from frozenbn._advice import SMALL_BATCH
from tests import testing

REPO = testing.REPO
COMMITTED = "audit_batch_small_tensorflow_cpu.json"


def _load():
    return testing.load_script(os.path.join("benchmarks", "audit_batch.py"))


@pytest.mark.full  # pretrains and audits ResNet50: a long scenario
def test_audit_batch_tiny_writes_json_and_markdown(tmp_path):
    bench = _load()
    assert bench.main(["--tiny", "--seeds", "0,", "--batch-sizes", "1,32",
                       "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    assert path.name.startswith(f"audit_batch_tiny_{keras.config.backend()}_")
    result = json.loads(path.read_text())
    (run,) = result["runs"]
    assert [row["batch_size"] for row in run["audits"]] == [1, 32]
    for row in run["audits"]:
        assert row["recommendation"].startswith(row["remedy"] + ": ")
    # --tiny does not train on the source, only recalibrates the backbone
    # there. One image per batch: fit's statistics are each image's own,
    # further from the moving ones than those of 32 images.
    scores = [row["max_score"] for row in run["audits"]]
    assert scores[0] > scores[1] > 0
    assert run["audits"][0]["remedy"] == "freeze"
    # Every layer is in fit: the rule is the drift threshold and the
    # small-batch size.
    for row in run["audits"]:
        frozen = (row["max_score"] > DRIFT_SCORE
                  or row["batch_size"] < SMALL_BATCH)
        assert row["remedy"] == ("freeze" if frozen else "recalibrate"), row
    markdown = path.with_suffix(".md").read_text()
    assert "| seed | batch 1 | batch 32 |" in markdown

    os.remove(path.with_suffix(".md"))
    assert bench.main(["--render", str(path)]) == 0
    assert path.with_suffix(".md").read_text() == markdown


def test_docs_show_the_committed_audit_batch_results():
    """docs/results.md's table is the one rendered from the committed
    results file (`audit_batch.py --render JSON --docs` rewrites it)."""
    bench = _load()
    block = bench.docs_block(testing.committed_result(COMMITTED), COMMITTED)
    with open(os.path.join(REPO, bench.DOCS_PAGE), encoding="utf-8") as f:
        text = f.read()
    assert bench._common.replace_block(text, bench.DOCS_MARKER, block) == text, (
        f"{bench.DOCS_PAGE} is stale: run python benchmarks/audit_batch.py "
        f"--render benchmarks/results/{COMMITTED} --docs")
