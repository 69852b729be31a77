"""Every ```python block of docs/*.md runs, at a tiny size, and does what its
text says.

A block is a section's example: it runs in a fresh namespace, in an empty
folder, after `_prelude`, which defines the names the text assumes (`model`,
a compiled stock-BN network; its images and labels under the names the
pages use; `pretrained.keras` on disk; datasets for the distributed page).
`keras.applications.ResNet50` is a small BN network with the same arguments:
`weights="imagenet"` would need a download. A block that imports a backend
runs on that backend only.
"""

import glob
import os
import re

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.demo import training
from tests import testing


def _blocks():
    found = []
    for page in sorted(glob.glob(os.path.join(testing.REPO, "docs", "*.md"))):
        with open(page, encoding="utf-8") as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        name = os.path.basename(page)
        found += [pytest.param(block, id=f"{name}-{i}")
                  for i, block in enumerate(blocks)]
    return found


BLOCKS = _blocks()


def _classifier():
    base = testing.small_resnet(include_top=False, input_shape=(32, 32, 3))
    model = keras.Sequential([
        base,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(1e-5), "binary_crossentropy")
    return model


def _prelude(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, 16).astype("float32")
    _classifier().save(tmp_path / "pretrained.keras")
    names = {
        "keras": keras, "frozenbn": frozenbn,
        "model": _classifier(), "backbone_model": _classifier(),
        "x": x, "y": y, "xv": x[:8], "yv": y[:8], "x_calibration": x,
        "images": x, "labels": y, "train_images": x, "train_labels": y,
    }
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        names.update(train_ds=data, calibration_ds=data.repeat())
    return names


def _bn_layers(model):
    return frozenbn._walk.batch_norm_layers(model)


def _check(block, ns):
    """What the text around each block promises of it."""
    if "frozenbn.patch()" in block:
        assert all(isinstance(layer, frozenbn.BatchNormalization)
                   and layer.frozen for layer in _bn_layers(ns["base"]))
    elif "frozenbn.Frozen(" in block:
        assert frozenbn.Frozen in testing.layer_classes(ns["model"])
    elif "frozen_model =" in block:  # convert, freeze, unfreeze
        assert all(layer.frozen for layer in _bn_layers(ns["frozen_model"]))
        assert all(isinstance(layer, frozenbn.BatchNormalization)
                   for layer in _bn_layers(ns["model"]))  # inplace=True
    elif "frozenbn.fuse(" in block:  # fuse, train, unfuse, fold
        assert len(ns["report"].pairs) == 2 and not _bn_layers(ns["serving"])
        assert os.path.exists("fused.keras")
    elif "frozenbn.fold(" in block:
        assert len(ns["report"].pairs) == 2 and not _bn_layers(ns["folded"])
        assert os.path.isdir("serving")
    elif "frozenbn.audit(" in block:
        assert len(ns["report"].layers) == 2
    elif "frozenbn.recalibrate(" in block or "PreciseBN(" in block:
        # Statistics of the data: evaluate's loss is the loss with BN as in
        # fit (one batch holds all 16 samples: its statistics are theirs).
        model = ns["model"]
        if os.path.exists("best.keras"):  # the EMA weights and their BN
            model = keras.models.load_model("best.keras")
        x, y = ns["x"], ns["y"]
        np.testing.assert_allclose(
            model.evaluate(x, y, batch_size=32, verbose=0),
            training.fit_mode_loss(model, x, y, batch_size=32), rtol=1e-3)
    else:
        assert ns["layer"].frozen


def test_the_docs_have_examples():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("block", BLOCKS)
def test_docs_block_runs(block, tmp_path, monkeypatch):
    for backend in ("tensorflow", "jax", "torch"):
        if re.search(rf"^import {backend}\b", block, re.M):
            if keras.config.backend() != backend:
                pytest.skip(f"a {backend} example")
    if ".export(" in block and keras.config.backend() == "torch":
        # What usage.md says: Keras's own export fails there, frozenbn or not.
        with pytest.raises(Exception, match="dynamic_shapes"):
            _classifier().export(str(tmp_path / "stock"))
        pytest.skip("Keras's export fails in torch.export for any model")
    monkeypatch.setattr(keras.applications, "ResNet50", testing.small_resnet)
    monkeypatch.chdir(tmp_path)
    namespace = _prelude(tmp_path)
    try:
        exec(compile(block, "docs", "exec"), namespace)
    finally:
        keras.distribution.set_distribution(None)
    _check(block, namespace)
