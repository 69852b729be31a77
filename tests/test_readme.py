"""The README's code runs as written, and does what its text says; every
`frozenbn.…` name the README and the docs give exists.

Every ```python block of README.md is executed in a fresh namespace, in an
empty folder. On every push `keras.applications.ResNet50` is replaced by a
small BN network with the same arguments (the recipes' frozenbn and Keras
calls are the same; ResNet50's compile time is not); the `full` tier runs
the blocks with ResNet50 itself.
"""

import glob
import importlib
import os
import re

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.demo import training
from tests import testing

with open(os.path.join(testing.REPO, "README.md"), encoding="utf-8") as f:
    BLOCKS = re.findall(r"```python\n(.*?)```", f.read(), re.S)


def _small_resnet(weights=None, **kwargs):
    """`testing.small_resnet`; the README's recipes run offline as written."""
    assert weights is None
    return testing.small_resnet(weights=weights, **kwargs)


def _run(block, tmp_path, monkeypatch, resnet):
    if resnet is not None:
        monkeypatch.setattr(keras.applications, "ResNet50", resnet)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def _check(namespace, tmp_path):
    """What the text around each block promises of it."""
    x = namespace["x"]
    if "report" in namespace:
        # audit at batch 8, a stock backbone: under 32 the rule says freeze.
        assert namespace["report"].recommendation.remedy == "freeze"
        assert namespace["report"].batch_size == 8
        return
    model, y = namespace["model"], namespace["y"]
    layers = frozenbn._walk.batch_norm_layers(model)
    assert layers
    evaluated = model.evaluate(x, y, batch_size=32, verbose=0)
    fit_mode = training.fit_mode_loss(model, x, y, batch_size=32)
    if all(isinstance(l, frozenbn.BatchNormalization) and l.frozen
           for l in layers):
        # Frozen: fit's normalization is evaluate's, the same function.
        np.testing.assert_allclose(evaluated, fit_mode, rtol=1e-4)
    else:
        # Recalibrated and saved: evaluate agrees with fit's normalization
        # of the same weights, and the file holds the new statistics.
        assert evaluated <= 1.5 * fit_mode, (evaluated, fit_mode)
        saved = keras.models.load_model(tmp_path / "model.keras")
        testing.assert_weights_equal(model, saved)


def test_readme_has_the_three_recipes():
    assert len(BLOCKS) == 3
    assert "frozenbn.recalibrate" in BLOCKS[0]
    assert "frozenbn.convert" in BLOCKS[1] and "Adam(1e-5)" in BLOCKS[1]
    assert "frozenbn.audit" in BLOCKS[2]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    namespace = _run(BLOCKS[index], tmp_path, monkeypatch, _small_resnet)
    _check(namespace, tmp_path)


@pytest.mark.full
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_with_resnet50(index, tmp_path, monkeypatch):
    namespace = _run(BLOCKS[index], tmp_path, monkeypatch, None)
    _check(namespace, tmp_path)


def _resolve(dotted):
    """The object `dotted` names after `import frozenbn`, importing a
    subpackage where an attribute is not there (`frozenbn.demo`)."""
    parts = dotted.split(".")
    obj = frozenbn
    for index, part in enumerate(parts[1:], 2):
        if not hasattr(obj, part):
            obj = importlib.import_module(".".join(parts[:index]))
        else:
            obj = getattr(obj, part)
    return obj


def test_every_frozenbn_name_in_the_readme_and_docs_exists():
    pages = [os.path.join(testing.REPO, "README.md")] + sorted(
        glob.glob(os.path.join(testing.REPO, "docs", "*.md")))
    names = {}
    for page in pages:
        with open(page, encoding="utf-8") as f:
            for name in re.findall(r"(?<![\w/.])frozenbn(?:\.[A-Za-z_]\w*)+",
                                   f.read()):
                names.setdefault(name, os.path.basename(page))
    assert "frozenbn.FusedBatchNorm" in names
    missing = {}
    for name, page in sorted(names.items()):
        try:
            _resolve(name)
        except (AttributeError, ImportError) as error:
            missing[name] = f"{page}: {error}"
    assert not missing, missing
