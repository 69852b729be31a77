"""Smoke test of benchmarks/gap.py at its `--tiny` size, and its docs blocks."""

import json
import os

import keras
import pytest

from frozenbn._advice import DRIFT_SCORE
from frozenbn._advice import SMALL_BATCH
from tests import testing

REPO = testing.REPO


def _load_gap():
    return testing.load_script(os.path.join("benchmarks", "gap.py"))


@pytest.mark.parametrize("script", ["gap.py", "audit_batch.py", "head_units.py",
                                    os.path.join("gpu", "gap_seeds.py")])
def test_every_benchmark_reads_seeds_one_way_and_no_abbreviation(script, capsys):
    """`--seeds` means the same in every script ("3" the first three seeds,
    "3," seed 3), nothing naming no seed runs, and a prefix such as
    `--seed` is refused instead of read as `--seeds`."""
    module = testing.load_script(os.path.join("benchmarks", script))
    seeds = module._common.seed_list
    assert seeds("3") == [0, 1, 2] and seeds("3,") == [3] and seeds("0,4") == [0, 4]
    for bad in ("0", "", ",", "x"):
        with pytest.raises(Exception, match="names no seed"):
            seeds(bad)
    with pytest.raises(SystemExit):
        module.main(["--seed", "1"])
    assert "unrecognized arguments: --seed" in capsys.readouterr().err


@pytest.mark.full  # trains ResNet50 on two seeds: a long scenario
def test_gap_tiny_two_seeds_writes_json_markdown_and_plots(tmp_path, capsys):
    gap = _load_gap()
    # One trained arm and one derived from it keep this to one ResNet50
    # trace per seed; every arm's preparation is tested in test_demo.py.
    code = gap.main(["--tiny", "--seeds", "0,3", "--arms",
                     "stock,stock_recalibrated", "--batch-size", "16",
                     "--out", str(tmp_path)])
    assert code == 0
    payload = json.loads(next(tmp_path.glob("*.json")).read_text())
    kind = "gpu" if payload["runs"][0]["environment"]["accelerator"] else "cpu"
    stem = tmp_path / f"gap_tiny_{keras.config.backend()}_{kind}"
    for suffix in (".json", ".md", ".png", "_curves.png"):
        assert (tmp_path / (stem.name + suffix)).stat().st_size > 0
    assert payload["benchmark"] == "gap" and payload["warnings"] == []
    assert [run["config"]["seed"] for run in payload["runs"]] == [0, 3]
    # --batch-size changes fine-tuning, evaluation and the audit, not how
    # the backbone is pretrained.
    assert {(run["config"]["batch_size"], run["config"]["pretrain_batch_size"])
            for run in payload["runs"]} == {(16, 32)}
    for run in payload["runs"]:
        assert [arm["name"] for arm in run["arms"]] == [
            "stock", "stock_recalibrated"]
        for arm in run["arms"]:
            for key in ("fit_loss", "eval_loss", "ratio", "heldout_accuracy",
                        "heldout_prediction_std", "constant", "curves"):
                assert key in arm
        assert run["audit"]["recommendation"]
    ratios = [run["arms"][0]["ratio"] for run in payload["runs"]]
    mean = payload["summary"]["stock"]["ratio"]["mean"]
    assert mean == pytest.approx(sum(ratios) / 2)
    assert "stock: eval/fit >= 5 on every seed" in payload["checks"]
    markdown = stem.with_suffix(".md").read_text()
    env = payload["runs"][0]["environment"]
    assert "## Mean ± std over seeds" in markdown and env["device"] in markdown
    assert "batch size 16 (pretraining 32)" in markdown
    assert "eval/fit" in capsys.readouterr().out

    # --render rewrites the same files from the JSON alone.
    os.remove(stem.with_suffix(".md"))
    assert gap.main(["--render", str(stem.with_suffix(".json"))]) == 0
    assert stem.with_suffix(".md").read_text() == markdown


@pytest.mark.parametrize("name", sorted(_load_gap().DOCS))
def test_docs_show_the_committed_gap_results(name):
    """The summary blocks of the docs are the ones rendered from the
    committed results files (`gap.py --render JSON --docs` rewrites them)."""
    gap = _load_gap()
    block = gap.docs_block(testing.committed_result(name), name)
    for page, marker in gap.DOCS[name].items():
        with open(os.path.join(REPO, page), encoding="utf-8") as f:
            text = f.read()
        assert gap._common.replace_block(text, marker, block) == text, (
            f"{page} is stale: run python benchmarks/gap.py --render "
            f"benchmarks/results/{name} --docs")


def _committed_runs(gap, name):
    payload = testing.committed_result(name)
    return payload, gap._runs(payload)


def test_audit_pick_reads_the_recorded_score_with_todays_rule():
    """Every committed run's audit of the pretrained backbone: above the
    drift threshold or under the small-batch size the rule says freeze (the
    frozenbn arm), otherwise recalibrate (stock training, then
    recalibrate)."""
    gap = _load_gap()
    for name in sorted(gap.DOCS):
        _, runs = _committed_runs(gap, name)
        for run in runs:
            frozen = (run.audit["max_score"] > DRIFT_SCORE
                      or run.config["batch_size"] < SMALL_BATCH)
            assert run.audit_pick == (("freeze", "frozenbn") if frozen else
                                  ("recalibrate", "stock_recalibrated"))
    # The batch-32 runs score below the threshold, the batch-4 run above.
    _, runs = _committed_runs(gap, "gap_small_tensorflow_cpu.json")
    assert {run.audit_pick[0] for run in runs} == {"recalibrate"}
    payload, runs = _committed_runs(gap, "gap_small_batch4_tensorflow_cpu.json")
    assert {run.audit_pick[0] for run in runs} == {"freeze"}
    (check,) = [c for name, c in gap.checks(runs).items()
                if name.startswith("audit's remedy")]
    assert check["met"] and check["detail"].startswith("freeze 0.023, ")
    assert payload["checks"] == gap.checks(runs)


def _assert_shows(gap, page_and_marker, block):
    """The page's marked block is `block` (what `gap.py --docs` writes)."""
    testing.assert_block_current(
        gap, page_and_marker, block, "python benchmarks/gap.py --render "
        "benchmarks/results/gap_small_tensorflow_cpu.json --docs")


def test_docs_show_the_audit_picks_of_the_committed_runs():
    """docs/results.md's table of audit's picks is the one generated from
    every committed results file that a docs page shows."""
    gap = _load_gap()
    block = gap.audit_picks_block(testing.RESULTS)
    _assert_shows(gap, gap.AUDIT_PICKS, block)
    rows = [line for line in block.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == sum(
        len(_committed_runs(gap, name)[1]) for name in gap.DOCS)


def test_readme_shows_the_committed_gap_results():
    """The README's table is the one generated from every committed results
    file that a docs page shows; its best-arm counts add up per seed, and
    each remedy's worst eval/fit above 1.5 is explained below it."""
    gap = _load_gap()
    block = gap.readme_block(testing.RESULTS)
    _assert_shows(gap, gap.README_TABLE, block)
    lines = block.splitlines()
    rows = [line.split(" | ") for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == len(gap.README_ARMS)
    for column, seeds in ((3, 11), (6, 8)):
        best = [int(row[column].split(" of ")[0]) for row in rows]
        assert sum(best) == seeds, best
    remedies = [row[0].lstrip("| ") for row in rows[1:]]
    explained = [label for row, label in zip(rows[1:], remedies)
                 if max(float(row[c].split("(")[1].rstrip(")"))
                        for c in (1, 4)) > 1.5]
    assert explained, "the committed runs have a remedy above 1.5"
    for label in explained:
        assert f"{label} at batch " in lines[-1], lines[-1]


def test_docs_refuse_a_results_file_no_page_shows(tmp_path):
    """`--docs` with another results file (a tagged side run) must not
    overwrite the committed run's summary."""
    gap = _load_gap()
    path = tmp_path / "gap_small_lr1e-3_tensorflow_cpu.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="No docs page shows"):
        gap.update_docs(str(path))


def test_replace_block():
    gap = _load_gap()
    text = "a\n<!-- m:begin -->\nold\n<!-- m:end -->\nb"
    assert gap._common.replace_block(text, "m", "new") == (
        "a\n<!-- m:begin -->\nnew\n<!-- m:end -->\nb")
    with pytest.raises(ValueError, match="No <!-- x:begin/end -->"):
        gap._common.replace_block(text, "x", "new")
