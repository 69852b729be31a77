"""How `pytest -n N` groups tests on workers (`testing.worker_scope`)."""

import os

import pytest

from tests import testing

SWEEP = testing.SWEEP_MODULE
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def test_checks_of_one_sweep_model_share_a_worker():
    scope = testing.worker_scope
    fold = scope(f"{SWEEP}::test_fold_matches_and_reports_every_layer[ResNet50]")
    saved = scope(f"{SWEEP}::test_keras_file_round_trip[ResNet50]")
    other = scope(f"{SWEEP}::test_keras_file_round_trip[ResNet50V2]")
    assert fold == saved == f"{SWEEP}[ResNet50]"
    assert other != fold


def test_shared_modules_share_a_worker_and_the_rest_balance():
    scope = testing.worker_scope
    assert [scope(f"tests/test_convert.py::{name}")
            for name in ("test_a", "test_b[x]")] == ["tests/test_convert.py"] * 2
    for nodeid in (
        f"{SWEEP}::test_every_discovered_model_is_swept",
        "tests/test_layers.py::test_layer_basics",
        "tests/test_fold.py::test_cases[ResNet50]",
    ):
        assert scope(nodeid) == nodeid


@pytest.mark.parametrize("module", [*testing.SHARED_WORKER_MODULES, SWEEP])
def test_grouped_modules_exist(module):
    # A renamed module would silently lose its grouping.
    assert os.path.isfile(os.path.join(REPO, module))
