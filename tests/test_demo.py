"""Tests of the demo data, the fit-vs-evaluate scenario and `frozenbn demo`.

The two scenario tests train ResNet50 (32x32, a few hundred images) and take
about a minute each on a 2-core CPU.
"""

import json
import os

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.cli import main
from frozenbn.demo import data as demo_data
from frozenbn.demo import scenario
from tests import testing


# Stock's gap at the suite's sizes: evaluate at least 3x fit, twice the
# 1.5 that every remedy must stay under. After two epochs stock's checkpoint
# predicts a near-constant, so its evaluate loss saturates at 8.55 and the
# ratio is 8.55 / fit loss: 10x and more on TensorFlow, 5.4x-5.8x on JAX and
# torch (fit loss 1.35-1.6), where a machine's rounding moves fit's loss by
# more than the margin to issue 14's 5x (its bar for the full demo).
GAP = 3.0


def _write_folder(root, sizes=((20, 30), (40, 40)), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("class_a", "class_b")):
        os.makedirs(root / name)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            pixels[..., label] = 255  # a class-dependent color
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_load_demo_data_shapes_and_balance():
    data = demo_data.load_demo_data()
    for domain in data:
        for split in domain:
            assert split.x.dtype == np.uint8 and split.y.dtype == np.uint8
            assert split.x.shape[1:] == (32, 32, 3)
            assert len(split.x) == len(split.y) > 0
            assert abs(split.y.mean() - 0.5) < 0.05
    # The target domain is shifted: color photos vs grayscale textures.
    source_x, target_x = data.source.train.x, data.target.train.x
    assert np.array_equal(source_x[..., 0], source_x[..., 1])
    assert not np.array_equal(target_x[..., 0], target_x[..., 1])


def test_build_demo_data_is_deterministic(tmp_path):
    pytest.importorskip("skimage")
    sizes = dict(source_train=6, source_heldout=4, target_train=6,
                 target_heldout=4)
    path = tmp_path / "d.npz"
    built = demo_data.build_demo_data(str(path), **sizes)
    again = demo_data.build_demo_data(None, **sizes)
    loaded = demo_data.load_demo_data(str(path))
    for a, b in zip(built.target.train, loaded.target.train):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(built.source.heldout.x,
                                  again.source.heldout.x)


def test_load_image_folder(tmp_path):
    root = _write_folder(tmp_path / "imgs")
    x, y, names = demo_data.load_image_folder(str(root), 16)
    assert names == ["class_a", "class_b"]
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    assert x[y == 0][..., 0].min() == 255 and x[y == 1][..., 1].min() == 255
    domain = demo_data.split_heldout(x, y, fraction=0.34)
    assert len(domain.train.x) == 4 and len(domain.heldout.x) == 2
    assert sorted(domain.heldout.y) == [0, 1]


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        demo_data.load_image_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="No class subfolders"):
        demo_data.load_image_folder(str(tmp_path))
    os.makedirs(tmp_path / "a")
    with pytest.raises(ValueError, match="No images found"):
        demo_data.load_image_folder(str(tmp_path))


def test_unknown_and_misordered_arms():
    with pytest.raises(ValueError, match="Unknown arm"):
        scenario.run_scenario(None, arms=("nope",))
    with pytest.raises(ValueError, match="list 'stock' before it"):
        scenario.run_scenario(None, arms=("stock_recalibrated", "stock"))


def test_scenario_gap_closed_by_convert(tmp_path):
    """The core issue: stock Keras's fit and evaluate disagree; frozenbn's
    agree. ResNet50 (weights=None) pretrained for one epoch on 128 source
    textures, fine-tuned for two epochs on 192 target photos, the best
    checkpoint reloaded from disk with plain `keras.models.load_model`."""
    config = scenario.ScenarioConfig(
        pretrain_epochs=1, epochs=2, max_source=128, max_target=192,
        curves=False, seed=0,
    )
    result = scenario.run_scenario(
        demo_data.load_demo_data(), config, ("stock", "frozenbn"),
        checkpoint_dir=str(tmp_path), verbose=0,
    )
    stock, frozen = result.arm("stock"), result.arm("frozenbn")
    assert os.path.isfile(tmp_path / "frozenbn.keras")
    assert stock.ratio >= GAP, result.table()
    assert frozen.ratio <= 1.5, result.table()
    _check_audit_pinpoints_the_gap(str(tmp_path / "stock.keras"))


def _check_audit_pinpoints_the_gap(path):
    """`audit` on the stock checkpoint of the scenario names the layers that
    cause the gap: recalibrating only its five worst-ranked BN layers closes
    the gap far more than recalibrating its five best-ranked ones."""
    target = demo_data.load_demo_data().target.train
    x = scenario.preprocess(target.x[:192], 32)
    y = target.y[:192].astype("float32")
    report = frozenbn.audit(keras.models.load_model(path), (x, y))
    assert report.ratio >= GAP, str(report)
    names = [layer.name for layer in report.layers]
    assert len(names) == 53

    def loss_after_recalibrating(selected):
        model = keras.models.load_model(path)
        frozenbn.recalibrate(
            model, x, include=lambda layer: layer.name in selected, verbose=0
        )
        return model.evaluate(x, y, verbose=0)[0]

    worst = loss_after_recalibrating(set(names[:5]))
    best = loss_after_recalibrating(set(names[-5:]))
    # The ranking is the claim: the five worst-ranked layers matter more
    # than the five best-ranked ones, by a clear margin, and fixing them
    # lowers the loss. The sizes depend on the backend and the machine:
    # worst 7.50 and best above 75 from 8.55 on CI's TensorFlow, worst 0.92
    # and best 8.55 from 8.55 on JAX.
    assert worst * 2 < best, (worst, best, str(report))
    assert worst < report.inference_loss, (worst, str(report))


def test_demo_quick_writes_results_with_the_pattern(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "evaluate loss" in printed and "held-out acc" in printed
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    arms = {arm["name"]: arm for arm in results["arms"]}
    assert list(arms) == list(scenario.DEMO_ARMS)
    assert results["environment"]["backend"]
    assert arms["stock"]["ratio"] >= GAP
    assert arms["frozenbn"]["ratio"] <= 1.5
    assert arms["stock_recalibrated"]["ratio"] <= 1.5
    assert len(arms["stock"]["curves"]["eval_loss"]) == arms["stock"][
        "epochs_run"]
    assert "| arm |" in (out / "results.md").read_text()


def _small_backbone():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(),
    ])


def test_arm_preparations():
    x = np.random.default_rng(0).normal(3.0, 1.0, (16, 8, 8, 3))
    backbone = scenario.ARMS["keras_backbone_frozen"].prepare(
        _small_backbone(), x)
    assert not backbone.trainable_weights

    backbone = scenario.ARMS["keras_bn_frozen"].prepare(_small_backbone(), x)
    assert not backbone.layers[1].trainable and backbone.layers[0].trainable

    backbone = scenario.ARMS["frozenbn"].prepare(_small_backbone(), x)
    bn = backbone.layers[1]
    assert isinstance(bn, frozenbn.BatchNormalization) and bn.frozen
    assert bn.trainable

    original = _small_backbone()
    backbone = scenario.ARMS["frozenbn_recalibrated"].prepare(original, x)
    bn = backbone.layers[1]
    assert bn.frozen
    assert not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), 0.0)


def test_user_folder_and_local_weights_file_end_to_end(tmp_path, capsys):
    """The real loading paths, offline: a user's image folder and a local
    ResNet50 weights file (what `weights="imagenet"` reads from Keras's
    cache), through `frozenbn demo`."""
    backbone = scenario.build_backbone(None, 32)
    testing.randomize_batch_norm(backbone)
    weights = tmp_path / "resnet50.weights.h5"
    backbone.save_weights(weights)
    loaded = scenario.build_backbone(str(weights), 32)
    testing.assert_weights_equal(backbone, loaded)

    folder = _write_folder(tmp_path / "photos", per_class=8)
    out = tmp_path / "demo"
    code = main([
        "demo", "--quick", "--data", str(folder), "--weights", str(weights),
        "--arms", "stock", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["weights"] == str(weights)
    assert results["data"]["target_train"] + results["data"]["target_heldout"] == 16
