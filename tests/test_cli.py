"""Tests of the `frozenbn` command line (`frozenbn.cli.main`)."""

import json
import os
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


def test_recalibrate(model_file, image_dir, tmp_path, capsys):
    out = tmp_path / "recalibrated.keras"
    code = main(["recalibrate", str(model_file), str(image_dir), str(out),
                 "--preprocess", "unit"])
    assert code == 0, capsys.readouterr().err
    assert "recalibrated 1 BatchNormalization layer(s) on 10 image(s)" in (
        capsys.readouterr().out)
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
    assert main(["demo", "--data", str(image_dir)]) == 1
    assert "two classes" in _error_line(capsys)
    assert main(["demo", "--weights", str(tmp_path / "w.h5"), "--quick",
                 "--out", str(tmp_path / "o")]) == 1
    assert "weights file not found" in _error_line(capsys)
