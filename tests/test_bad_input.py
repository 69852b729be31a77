"""Misuse of every public entry point: clear errors, nothing changed.

Each case asserts the error type and message and that the user's model
(classes, `frozen` flags, weights) or files (bytes) are as before. The table
of these errors is docs/errors.md.
"""

import logging
import os
import re

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.cli import main
from tests import testing

NOT_MODELS = [None, "model.keras", np.zeros((2, 3)), {"layer": 1}, print]


def _model():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="dense"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.Dense(2, name="dense2"),
            keras.layers.BatchNormalization(name="bn2"),
        ]
    )
    return testing.randomize_batch_norm(model, seed=11)


def _state(model):
    """Everything a failed call must leave alone."""
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return (
        [type(l) for l in layers],
        [getattr(l, "frozen", None) for l in layers],
        ["call" in vars(l) for l in layers],  # no patched call left behind
        testing.weights_of(model),
    )


def _assert_unchanged(model, before):
    after = _state(model)
    assert after[:3] == before[:3]
    assert len(after[3]) == len(before[3])
    for a, b in zip(after[3], before[3]):
        np.testing.assert_array_equal(a, b)


_PUBLIC = {
    "convert": lambda obj: frozenbn.convert(obj),
    "freeze": lambda obj: frozenbn.freeze(obj),
    "unfreeze": lambda obj: frozenbn.unfreeze(obj),
    "recalibrate": lambda obj: frozenbn.recalibrate(
        obj, np.zeros((4, 3)), verbose=0
    ),
    "fold": lambda obj: frozenbn.fold(obj),
    "audit": lambda obj: frozenbn.audit(obj, np.zeros((4, 3))),
}


@pytest.mark.parametrize("function", sorted(_PUBLIC))
@pytest.mark.parametrize(
    "obj", NOT_MODELS, ids=[type(o).__name__ for o in NOT_MODELS]
)
def test_non_models_are_rejected_by_name(function, obj):
    with pytest.raises(
        TypeError,
        match=rf"`frozenbn\.{function}` expects a Keras model or layer\. "
        rf"Received: an object of type {type(obj).__name__}\.",
    ):
        _PUBLIC[function](obj)


@pytest.mark.parametrize(
    "obj", NOT_MODELS, ids=[type(o).__name__ for o in NOT_MODELS]
)
def test_frozen_wrapper_rejects_non_layers(obj):
    with pytest.raises(
        TypeError,
        match=rf"wraps a Keras layer or model\. Received: layer of type "
        rf"{type(obj).__name__}\.",
    ):
        frozenbn.Frozen(obj)
    with pytest.raises(TypeError, match="`frozen` must be a Python bool"):
        frozenbn.Frozen(keras.layers.Dense(1), frozen="yes")


_WITH_INCLUDE = {
    "convert": lambda model, include: frozenbn.convert(
        model, inplace=True, include=include),
    "freeze": lambda model, include: frozenbn.freeze(model, include=include),
    "unfreeze": lambda model, include: frozenbn.unfreeze(
        model, include=include),
    "recalibrate": lambda model, include: frozenbn.recalibrate(
        model, np.ones((4, 3)), verbose=0, include=include),
}


@pytest.mark.parametrize("function", sorted(_WITH_INCLUDE))
def test_include_given_a_layer_name_says_how_to_select_by_name(function):
    model = _model()
    if function in ("freeze", "unfreeze"):
        model = frozenbn.convert(model, frozen=function == "unfreeze")
    before = _state(model)
    with pytest.raises(
        TypeError,
        match=r"^`include` must be a callable include\(layer\) -> bool or "
        r"None\. Received: include='bn1'\. To select layers by name, pass "
        r"include=lambda layer: layer\.name == 'bn1'\.$",
    ):
        _WITH_INCLUDE[function](model, "bn1")
    _assert_unchanged(model, before)
    with pytest.raises(TypeError, match=r"Received: include=\['bn1'\]\.$"):
        _WITH_INCLUDE[function](model, ["bn1"])


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


def test_subclassed_models_need_inplace():
    model = _Subclassed(name="sub")
    model(np.zeros((2, 3), "float32"))
    testing.randomize_batch_norm(model)
    before = _state(model)
    with pytest.raises(
        TypeError,
        match=r"convert` needs a Functional or Sequential model.*'sub' is a "
        r"_Subclassed.*frozenbn\.convert\(model, inplace=True\)",
    ):
        frozenbn.convert(model)
    with pytest.raises(
        TypeError, match=r"needs a Functional or Sequential model.*'sub'"
    ):
        frozenbn.fold(model)
    _assert_unchanged(model, before)
    # What the message says to do works, and keeps the weights bit for bit.
    assert frozenbn.convert(model, inplace=True) is model
    assert type(model.bn) is frozenbn.BatchNormalization and model.bn.frozen
    for a, b in zip(testing.weights_of(model), before[3]):
        np.testing.assert_array_equal(a, b)


def test_converting_a_converted_model_is_idempotent():
    once = frozenbn.convert(_model())
    with pytest.warns(UserWarning, match=r"^frozenbn.convert changed nothing: "
                      r"its 2 selected BatchNormalization layer\(s\) were "
                      r"frozenbn's already, with frozen=True. The result is a "
                      r"plain copy"):
        twice = frozenbn.convert(once)
    assert twice is not once
    assert [type(l) for l in twice.layers] == [type(l) for l in once.layers]
    assert [l.frozen for l in twice.layers if hasattr(l, "frozen")] == [
        True,
        True,
    ]
    testing.assert_weights_equal(once, twice)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(
        testing.to_numpy(once(x, training=True)),
        testing.to_numpy(twice(x, training=True)),
    )
    before = _state(once)
    with pytest.warns(UserWarning, match="the model as it was"):
        assert frozenbn.convert(once, inplace=True) is once
    _assert_unchanged(once, before)
    with pytest.warns(UserWarning, match=r"freeze changed nothing: its 2 "
                      r"selected layer\(s\) already had frozen=True"):
        assert frozenbn.freeze(once) == 0
    # Converting again with another flag only sets the flag.
    with testing.no_frozenbn_warnings(UserWarning):
        unfrozen = frozenbn.convert(once, frozen=False)
    assert [l.frozen for l in unfrozen.layers if hasattr(l, "frozen")] == [
        False,
        False,
    ]
    testing.assert_weights_equal(once, unfrozen)


def test_axis_must_be_one_int():
    # Keras 3 BN normalizes one axis; stock Keras fails in `int(axis)`
    # without naming the argument, and truncates floats.
    with pytest.raises(TypeError, match=r"int\(\) argument must be"):
        keras.layers.BatchNormalization(axis=[1, 2])
    for axis in ([1, 2], (3,), 1.5, "channels", True):
        with pytest.raises(
            TypeError, match=r"`axis` must be an int.*Received: axis="
        ):
            frozenbn.BatchNormalization(axis=axis)
    with pytest.raises(TypeError, match=r"axis=\[1, 2\]"):
        frozenbn.BatchNormalization([1, 2])
    assert frozenbn.BatchNormalization(axis=np.int64(1)).axis == 1


class _CustomBN(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=training, mask=mask) * 2.0


def test_unknown_batch_norm_subclasses_are_left_with_reasons(caplog):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(3, name="dense"),
            _CustomBN(name="custom"),
        ]
    )
    testing.randomize_batch_norm(model)
    before = _state(model)
    with pytest.raises(
        ValueError, match=r"Cannot convert layer 'custom'.*_CustomBN"
    ):
        frozenbn.convert(model)
    with pytest.raises(ValueError, match=r"_CustomBN"):
        frozenbn.convert(model, inplace=True)
    with pytest.warns(UserWarning, match=r"BatchNormalization layers are "
                      r"Keras's; convert it first"):
        assert frozenbn.freeze(model) == 0  # not a frozenbn layer: untouched
    # One policy, one wording: every tool leaves it and says why.
    reason = (
        f"a custom BatchNormalization subclass ({__name__}._CustomBN), whose "
        "own `call` frozenbn does not reinterpret"
    )
    folded, report = frozenbn.fold(model)
    assert report.pairs == []
    assert report.left == [(f"{model.name}/custom", reason)]
    with pytest.raises(ValueError, match=re.escape(reason)):
        frozenbn.convert(model)
    x = np.ones((2, 3), "float32")
    with caplog.at_level(logging.WARNING):
        assert frozenbn.recalibrate(model, x, verbose=0) == 0
        assert frozenbn.audit(model, x).layers == []
    assert sum("'custom'" in r.getMessage() and reason in r.getMessage()
               for r in caplog.records) >= 2
    _assert_unchanged(model, before)
    x = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(
        testing.to_numpy(folded(x)), testing.to_numpy(model(x))
    )


@pytest.mark.parametrize(
    "data,message",
    [
        (np.zeros((0, 3), "float32"), r"empty \(0 samples\)"),
        ([], "yielded no batches"),
        (iter([]), "yielded no batches"),
        ((np.zeros((0, 3)), np.zeros((0,))), r"empty \(0 samples\)"),
    ],
    ids=["array", "list", "generator", "tuple"],
)
def test_empty_data(data, message):
    model = _model()
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        frozenbn.recalibrate(model, data, verbose=0)
    _assert_unchanged(model, before)


def test_empty_tf_dataset():
    tf = pytest.importorskip("tensorflow")
    model = _model()
    before = _state(model)
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 3), "float32"))
    with pytest.raises(ValueError, match="yielded no batches"):
        frozenbn.recalibrate(model, empty.batch(4), verbose=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        frozenbn.audit(model, empty.batch(4))
    _assert_unchanged(model, before)


def test_wrong_shape():
    model = _model()
    before = _state(model)
    with pytest.raises(
        ValueError, match=r"expected axis -1 of input shape to have value 3"
    ):
        frozenbn.recalibrate(model, np.ones((8, 5), "float32"), verbose=0)
    with pytest.raises(ValueError, match="different numbers of samples"):
        frozenbn.recalibrate(
            model, (np.ones((8, 3)), np.ones((7, 1))), verbose=0
        )
    _assert_unchanged(model, before)


@pytest.mark.parametrize(
    "data",
    [
        np.array([["a", "b", "c"]] * 4),
        np.array([[b"a", b"b", b"c"]] * 4),
        np.array([[1.0, "x", None]] * 4, dtype=object),
    ],
    ids=["str", "bytes", "object"],
)
def test_non_numeric_data(data):
    model = _model()
    before = _state(model)
    with pytest.raises(
        TypeError,
        match=r"Batch 0 of the data has inputs of dtype .*not numbers",
    ):
        frozenbn.recalibrate(model, data, verbose=0)
    with pytest.raises(TypeError, match="not numbers"):
        frozenbn.audit(model, data)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_names_the_layer_and_writes_nothing(bad):
    model = _model()
    before = _state(model)
    x = np.random.default_rng(1).normal(size=(12, 3)).astype("float32")
    x[9, 1] = bad  # in the third batch of 4
    with pytest.raises(
        ValueError,
        match=r"Batch 2 of the data gives non-finite statistics \(NaN or "
        r"inf\) at BatchNormalization layer 'bn1'.*No statistics were "
        r"changed",
    ):
        frozenbn.recalibrate(model, x, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"Batch 2 .* layer 'bn1'"):
        frozenbn.audit(model, x, batch_size=4)
    _assert_unchanged(model, before)
    # The same data without the bad value recalibrates fine.
    x[9, 1] = 0.0
    assert frozenbn.recalibrate(model, x, batch_size=4, verbose=0) == 2


def test_overflow_inside_the_model_names_the_layer_where_it_appears():
    model = _model()
    model.get_layer("dense2").kernel.assign(np.full((4, 2), 3e38, "float32"))
    before = _state(model)
    x = np.random.default_rng(2).uniform(1, 2, (8, 3)).astype("float32")
    with pytest.raises(
        ValueError, match=r"Batch 0 .* at BatchNormalization layer 'bn2'"
    ):
        frozenbn.recalibrate(model, x, verbose=0)
    _assert_unchanged(model, before)


# --- the command line ------------------------------------------------------


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("frozenbn: error: "), err
    return err[0]


def _files(folder):
    """Every file under `folder`: path -> bytes."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture
def workdir(tmp_path):
    """A text file renamed .keras, a good model file and an image folder."""
    (tmp_path / "notes.keras").write_text("these are my notes, not a model\n")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile("sgd", "binary_crossentropy")
    model.save(tmp_path / "good.keras")
    os.makedirs(tmp_path / "images" / "a")
    (tmp_path / "images" / "a" / "broken.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    return tmp_path


def _cli_cases(d):
    out = str(d / "out.keras")
    notes, missing, folder = (
        str(d / "notes.keras"),
        str(d / "missing.keras"),
        str(d / "empty"),
    )
    images = str(d / "images")
    return [
        (["convert", notes, out], "corrupt or not a Keras 3 .keras archive"),
        (["convert", missing, out], f"no such file: {missing}"),
        (["convert", folder, out], "is a folder, not a .keras model file"),
        (["audit", notes, images], "corrupt or not a Keras 3 .keras archive"),
        (["audit", missing, images], f"no such file: {missing}"),
        (["audit", folder, images], "is a folder, not a .keras model file"),
        (
            ["recalibrate", notes, images, out],
            "corrupt or not a Keras 3 .keras archive",
        ),
        (["recalibrate", missing, images, out], f"no such file: {missing}"),
        (
            ["recalibrate", folder, images, out],
            "is a folder, not a .keras model file",
        ),
    ]


@pytest.mark.parametrize("case", range(9))
def test_cli_rejects_bad_model_paths_and_touches_no_file(
    case, workdir, capsys
):
    argv, message = _cli_cases(workdir)[case]
    before = _files(workdir)
    if argv[0] == "audit":
        argv += ["--out", str(workdir / "report")]
    assert main(argv) == 1
    assert message in _error_line(capsys)
    assert _files(workdir) == before  # nothing written, nothing changed
    assert not os.path.exists(workdir / "report")


@pytest.mark.parametrize("command", ["audit", "recalibrate"])
def test_cli_bad_data_folders_leave_the_model_file_alone(
    command, workdir, capsys
):
    good, out = str(workdir / "good.keras"), str(workdir / "out.keras")
    before = _files(workdir)
    expected = {
        "missing_dir": "Image folder not found: {path}",
        "good.keras": "{path} is a file, not a folder of images",
        "empty": "No class subfolders in {path}. Expected one subfolder",
        "images": "cannot identify image file '{path}/a/broken.png'",
    }
    for data, message in expected.items():
        path = str(workdir / data)
        argv = [command, good, path]
        argv += [out] if command == "recalibrate" else [
            "--out",
            str(workdir / "report"),
        ]
        assert main(argv) == 1, data
        assert message.format(path=path) in _error_line(capsys)
    assert _files(workdir) == before
    assert not os.path.exists(out)


def test_configs_from_a_newer_frozenbn_are_refused_not_misread():
    bn = frozenbn.BatchNormalization(frozen=True)
    wrapper = frozenbn.Frozen(keras.layers.Dense(2))
    for layer in (bn, wrapper):
        config = layer.get_config()
        assert config["config_version"] == 1
        newer = dict(config, config_version=2)
        with pytest.raises(ValueError, match="newer frozenbn.*Upgrade frozenbn"):
            type(layer).from_config(newer)
        with pytest.raises(ValueError, match="Invalid `config_version`"):
            type(layer).from_config(dict(config, config_version="1"))
        # Configs written before versioning read as version 1.
        unversioned = {k: v for k, v in config.items() if k != "config_version"}
        assert type(layer).from_config(unversioned).frozen is True


def test_nested_python_lists_are_refused_with_what_to_do():
    model = _model()
    before = _state(model)
    x = np.ones((4, 3)).tolist()
    for tool in (frozenbn.recalibrate, frozenbn.audit):
        with pytest.raises(TypeError, match=r"`x` is a \(nested\) Python list "
                           r"of numbers. Pass an array"):
            tool(model, x, verbose=0)
    _assert_unchanged(model, before)
