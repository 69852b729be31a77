"""Tests of the `frozenbn` command line (`frozenbn.cli.main`)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    """The `frozenbn` command (`frozenbn_cli`, its console entry point) in a
    subprocess, with the environment as a user has it: no log settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "FROZENBN_DEBUG")}
    env["PYTHONPATH"] = REPO
    return subprocess.run(
        [sys.executable, "-m", "frozenbn_cli", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("frozenbn: error: "), err
    return err[0]


@pytest.fixture
def model_file(tmp_path):
    """A small compiled conv + BN classifier saved as a .keras file."""
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.optimizer.build(model.trainable_variables)
    path = tmp_path / "model.keras"
    model.save(path)
    return path


@pytest.fixture
def image_dir(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("cats", "dogs")):
        os.makedirs(tmp_path / "imgs" / name)
        for i in range(5):
            pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
            pixels[..., label] = 200
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    return tmp_path / "imgs"


@pytest.mark.parametrize(
    "command", [[], ["demo"], ["convert"], ["audit"], ["recalibrate"]]
)
def test_help(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: frozenbn")


def test_help_and_error_in_a_subprocess(tmp_path):
    help_run = _run("demo", "--help")
    assert help_run.returncode == 0 and "--weights" in help_run.stdout
    error_run = _run("convert", str(tmp_path / "missing.keras"),
                     str(tmp_path / "out.keras"))
    assert error_run.returncode == 1
    # Only the command's own line: no traceback, no backend start-up logs.
    assert error_run.stderr.strip().splitlines() == [
        f"frozenbn: error: no such file: {tmp_path}/missing.keras"
    ]


def test_usage_error_is_one_line(capsys):
    assert main(["convert", "only_one.keras"]) == 2
    assert "the following arguments are required" in _error_line(capsys)
    assert main(["demo", "--image-size", "8"]) == 2
    assert "at least 32 pixels" in _error_line(capsys)


def test_model_file_errors(tmp_path, capsys):
    out = str(tmp_path / "out.keras")
    assert main(["convert", str(tmp_path / "none.keras"), out]) == 1
    assert "no such file" in _error_line(capsys)

    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"not a model")
    assert main(["convert", str(h5), out]) == 1
    assert "is not a .keras file" in _error_line(capsys)

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK garbage")
    assert main(["convert", str(corrupt), out]) == 1
    assert "corrupt or not a Keras 3 .keras archive" in _error_line(capsys)

    not_keras = tmp_path / "other.keras"
    with zipfile.ZipFile(not_keras, "w") as archive:
        archive.writestr("hello.txt", "a zip, but not a Keras model")
    assert main(["convert", str(not_keras), out]) == 1
    assert "could not load" in _error_line(capsys)

    assert main(["convert", str(tmp_path), out]) == 1
    assert "is a folder" in _error_line(capsys)


def test_convert_writes_a_frozen_model(model_file, tmp_path, capsys):
    out = tmp_path / "frozen.keras"
    assert main(["convert", str(model_file), str(out)]) == 0
    assert "converted 1 BatchNormalization layer(s) (frozen)" in (
        capsys.readouterr().out)
    loaded = keras.models.load_model(out)
    bn = loaded.layers[1]
    assert isinstance(bn, frozenbn.BatchNormalization) and bn.frozen

    unfrozen = tmp_path / "unfrozen.keras"
    assert main(["convert", str(model_file), str(unfrozen), "--unfrozen"]) == 0
    assert not keras.models.load_model(unfrozen).layers[1].frozen


def test_convert_output_checks(model_file, capsys):
    assert main(["convert", str(model_file), "out.h5"]) == 1
    assert "must end in .keras" in _error_line(capsys)
    assert main(["convert", str(model_file), str(model_file)]) == 1
    assert "refusing to overwrite" in _error_line(capsys)


def test_convert_fold(model_file, tmp_path, capsys):
    out = tmp_path / "folded.keras"
    assert main(["convert", str(model_file), str(out), "--fold"]) == 0
    original = keras.models.load_model(model_file)
    folded = keras.models.load_model(out)
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0),
                               original.predict(x, verbose=0), rtol=1e-4,
                               atol=1e-6)


def _recalibrate_ten_images(model_file, image_dir, out, capsys):
    code = main(["recalibrate", str(model_file), str(image_dir), str(out),
                 "--preprocess", "unit"])
    assert code == 0, capsys.readouterr().err
    assert "recalibrated 1 BatchNormalization layer(s) on 10 image(s)" in (
        capsys.readouterr().out)


def test_recalibrate(model_file, image_dir, tmp_path, capsys):
    out = tmp_path / "recalibrated.keras"
    _recalibrate_ten_images(model_file, image_dir, out, capsys)
    before = keras.models.load_model(model_file).layers[1]
    after = keras.models.load_model(out).layers[1]
    assert not np.allclose(after.moving_mean, before.moving_mean)


def test_recalibrate_empty_folder(model_file, tmp_path, capsys):
    os.makedirs(tmp_path / "empty" / "class_a")
    code = main(["recalibrate", str(model_file), str(tmp_path / "empty"),
                 str(tmp_path / "out.keras")])
    assert code == 1
    assert "No images found" in _error_line(capsys)


def test_audit(model_file, image_dir, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(["audit", str(model_file), str(image_dir), "--out", str(out),
                 "--preprocess", "unit"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    report = json.loads((out / "audit.json").read_text())
    assert report["samples"] == 10 and len(report["layers"]) == 1
    assert report["layers"][0]["name"] in printed
    assert (out / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_rejects_bad_inputs(tmp_path, image_dir, capsys):
    assert main(["demo", "--arms", "stock,bogus"]) == 1
    assert "unknown arm(s) bogus" in _error_line(capsys)
    os.makedirs(image_dir / "birds")
    shutil.copy(image_dir / "cats" / "0.png", image_dir / "birds")
    assert main(["demo", "--data", str(image_dir)]) == 1
    assert "two classes" in _error_line(capsys)
    assert main(["demo", "--weights", str(tmp_path / "w.h5"), "--quick",
                 "--out", str(tmp_path / "o")]) == 1
    assert "weights file not found" in _error_line(capsys)


def _save_model(path, channels=3, head=None):
    """A small conv + BN model on 8x8 images with `channels`, named and
    saved as `path`; `head` replaces the pooling and Dense(1) on top."""
    model = keras.Sequential([
        keras.Input((8, 8, channels)),
        keras.layers.Conv2D(4, 3, use_bias=False),
        keras.layers.BatchNormalization(),
        *(head or [keras.layers.GlobalAveragePooling2D(),
                   keras.layers.Dense(1, activation="sigmoid")]),
    ], name=path.stem)
    model.save(path)
    return path


def test_recalibrate_reads_nested_class_folders(model_file, image_dir,
                                                tmp_path, capsys):
    for name, nested in (("cats", "2023"), ("dogs", "a/b")):
        os.renames(image_dir / name, tmp_path / "moved" / name)
        os.renames(tmp_path / "moved" / name, image_dir / name / nested)
    _recalibrate_ten_images(model_file, image_dir,
                            tmp_path / "recalibrated.keras", capsys)


def test_an_empty_class_folder_is_a_warning(model_file, image_dir, tmp_path,
                                            capsys):
    os.makedirs(image_dir / "_unsorted")
    code = main(["recalibrate", str(model_file), str(image_dir),
                 str(tmp_path / "out.keras")])
    assert code == 0
    assert capsys.readouterr().err.splitlines() == [
        f"frozenbn: warning: Class folder(s) _unsorted in {image_dir} hold no "
        "images but still take a label (_unsorted=0), as in "
        "keras.utils.image_dataset_from_directory: the images are labelled "
        "cats=1, dogs=2. The model's labels must match; remove the empty "
        "folder(s), or move images into them."
    ]


def test_images_are_read_with_the_models_channels(image_dir, tmp_path,
                                                  capsys):
    gray = _save_model(tmp_path / "gray.keras", channels=1)
    out = tmp_path / "out.keras"
    code = main(["recalibrate", str(gray), str(image_dir), str(out),
                 "--preprocess", "unit"])
    assert code == 0, capsys.readouterr().err
    assert "recalibrated 1 BatchNormalization layer(s) on 10 image(s)" in (
        capsys.readouterr().out)
    # The statistics are those of the grayscale images.
    x, _, _ = frozenbn._images.load_image_folder(str(image_dir), 8,
                                                 channels=1)
    expected = keras.models.load_model(gray)
    frozenbn.recalibrate(expected, x.astype("float32") / 255, verbose=0)
    np.testing.assert_allclose(
        keras.models.load_model(out).layers[1].moving_mean,
        expected.layers[1].moving_mean, rtol=1e-5, atol=1e-6)

    code = main(["recalibrate", str(gray), str(image_dir), str(out),
                 "--preprocess", "caffe"])
    assert code == 1
    assert _error_line(capsys) == (
        "frozenbn: error: Preprocessing 'caffe' normalizes each RGB channel "
        "with ImageNet's statistics, so it needs 3-channel images. Received: "
        "images with 1 channel(s). Use 'unit' (0..1), 'tf' (-1..1) or 'none' "
        "(0..255) for them.")

    four = _save_model(tmp_path / "four.keras", channels=4)
    assert main(["audit", str(four), str(image_dir)]) == 1
    assert _error_line(capsys) == (
        "frozenbn: error: model 'four' takes images with 4 channels; audit "
        "and recalibrate read images as 1 channel (grayscale) or 3 (RGB)")


def test_keras_errors_are_printed_without_terminal_codes(image_dir, tmp_path,
                                                         capsys):
    flat = _save_model(tmp_path / "flat.keras",
                       head=[keras.layers.Flatten(), keras.layers.Dense(1)])
    keras.config.enable_traceback_filtering()  # Keras's bold error text
    try:
        code = main(["audit", str(flat), str(image_dir), "--image-size", "10",
                     "--loss", "mse", "--out", str(tmp_path / "a")])
    finally:
        keras.config.disable_traceback_filtering()
    assert code == 1
    line = _error_line(capsys)
    assert "\x1b" not in line
    assert ("is incompatible with the layer: expected axis -1 of input "
            "shape to have value 144, but received input with shape "
            "(10, 256)") in line


def test_convert_reports_what_it_changed(tmp_path, capsys):
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3),
        frozenbn.BatchNormalization(frozen=True),
        keras.layers.BatchNormalization(),
    ])
    mixed = tmp_path / "mixed.keras"
    model.save(mixed)
    once = tmp_path / "once.keras"
    assert main(["convert", str(mixed), str(once)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"converted 1 BatchNormalization layer(s) (frozen) -> {once}"]
    assert captured.err == ""

    twice = tmp_path / "twice.keras"
    assert main(["convert", str(once), str(twice)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "converted no BatchNormalization layer (nothing to change); wrote an "
        f"unchanged copy -> {twice}"]
    assert captured.err.startswith(
        "frozenbn: warning: frozenbn.convert changed nothing: its 2 selected")
    assert main(["convert", str(once), str(twice), "--unfrozen"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"converted 2 BatchNormalization layer(s) (unfrozen) -> {twice}"]
