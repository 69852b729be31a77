"""The scripts in examples/ run, at a tiny size, on generated files."""

import os

import keras
import numpy as np
import pytest

import frozenbn
from tests import testing


def _example(name):
    return testing.load_script(os.path.join("examples", f"{name}.py"))


def _image_folder(root, size=32, per_class=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("cats", "dogs")):
        os.makedirs(root / name)
        for i in range(per_class):
            pixels = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
            pixels[..., label] = 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@testing.full_tier_unless("tensorflow")
def test_finetune_keeps_the_pretrained_statistics(tmp_path):
    pretrained = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    testing.randomize_batch_norm(pretrained)
    weights = str(tmp_path / "resnet50_notop.weights.h5")
    pretrained.save_weights(weights)
    out = str(tmp_path / "model.keras")
    fit_loss, evaluate_loss = _example("finetune_frozen_resnet50").main([
        str(_image_folder(tmp_path / "images")), "--weights", weights,
        "--image-size", "32", "--batch-size", "8", "--epochs", "1",
        "--out", out,
    ])
    assert np.isfinite(fit_loss) and np.isfinite(evaluate_loss)
    model = keras.models.load_model(out)
    backbone = model.get_layer("resnet50")
    bn = backbone.get_layer("conv1_bn")
    assert isinstance(bn, frozenbn.BatchNormalization) and bn.frozen
    source = pretrained.get_layer("conv1_bn")
    for name in ("moving_mean", "moving_variance"):
        assert np.array_equal(
            testing.to_numpy(getattr(source, name)),
            testing.to_numpy(getattr(bn, name)),
        )
    assert not np.array_equal(  # gamma was fine-tuned
        testing.to_numpy(source.gamma), testing.to_numpy(bn.gamma)
    )


def test_serve_folded(tmp_path):
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    testing.randomize_batch_norm(model)
    path = str(tmp_path / "model.keras")
    model.save(path)
    error = _example("serve_folded").main([path, str(tmp_path / "out")])
    assert error <= 1e-5
    folded = keras.models.load_model(str(tmp_path / "out" / "folded.keras"))
    assert not any(
        isinstance(l, keras.layers.BatchNormalization) for l in folded.layers
    )
    if keras.config.backend() == "tensorflow":
        assert os.path.isdir(tmp_path / "out" / "saved_model")


def test_recalibrate_after_shift_makes_inference_match_fit(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(8, 5.0, "float32"))  # the "old domain"
    bn.moving_variance.assign(np.full(8, 0.01, "float32"))
    path = str(tmp_path / "model.keras")
    model.save(path)
    out = str(tmp_path / "recalibrated.keras")
    before, after = _example("recalibrate_after_shift").main(
        [path, str(_image_folder(tmp_path / "images")), out, "--batch-size", "4"]
    )
    # Old statistics: inference computes another function than fit (the
    # untrained head makes the losses themselves arbitrary: on torch the
    # recalibrated loss, 0.88, is above the old constant output's ln 2).
    assert before.max_output_diff > 1e-2
    assert after.max_output_diff < 1e-5
    assert after.ratio == pytest.approx(1.0, abs=0.05)
    saved = keras.models.load_model(out).get_layer("bn")
    assert np.max(np.abs(testing.to_numpy(saved.moving_mean) - 5.0)) > 1.0
