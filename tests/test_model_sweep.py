"""Every tool on every BatchNormalization model the installed packages ship.

The models come from `tests/model_zoo.py`, which derives them from the
installed `keras.applications` and keras-hub (backbones and image tasks),
so a new model is swept without editing this file. Each model is built
once, with random weights and randomized BN statistics at a small input
size, by a module-scoped parametrized fixture: pytest runs every check of
one model before it builds the next (under `pytest -n N`, all in one
worker: `testing.worker_scope`). One model per code path runs on every
push; the others are marked `full` (`pytest --full`).
"""

import functools
import logging
import os
import warnings

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.fuse import FusedBatchNorm
from tests import model_zoo
from tests import testing

MODELS = model_zoo.all_models()
KERAS_BN = keras.layers.BatchNormalization


class Case:
    """One model of the sweep, its inputs, and lazily made derivatives."""

    def __init__(self, spec):
        self.spec = spec
        self.model = testing.randomize_batch_norm(spec.build())
        self.x = spec.images()
        self.reference = testing.outputs(self.model, self.x)
        self.bn_count = testing.count_layers(self.model, KERAS_BN)

    @functools.cached_property
    def conversion(self):
        """`(converted copy, whether convert warned about saving)`."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            converted = frozenbn.convert(self.model)
        warned = any("rebuilds its layers" in str(w.message) for w in caught)
        return converted, warned

    @functools.cached_property
    def tolerance(self):
        """Absolute tolerance of an exact rewrite: 1e-5 and 10 rounding floors.

        Fold and fuse round each folded weight once, as moving every BN
        variance by one float32 step does (`testing.rounding_floor`). Where
        that floor reaches the outputs' scale, each pair is also checked on
        its own (`testing.assert_pairs_exact`).
        """
        return 1e-5 + 10 * testing.rounding_floor(self.model, self.x, self.reference)

    @property
    def floor_reaches_outputs(self):
        """Whether rounding alone moves the outputs by 1% of their scale,
        so that comparing whole outputs proves little."""
        scale = max(float(np.max(np.abs(r))) for r in self.reference)
        return self.tolerance > 1e-2 * scale

    @property
    def converted(self):
        return self.conversion[0]


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(spec, marks=[pytest.mark.full] if spec.full else [],
                     id=spec.id)
        for spec in MODELS
    ],
)
def case(request):
    try:
        case = Case(request.param)
    except ValueError as error:
        # Keras itself refuses some applications on some backends (NASNet
        # on torch): skipped with Keras's reason, never silently.
        if _not_on_this_backend(error):
            pytest.skip(str(error))
        raise
    yield case
    keras.backend.clear_session()


def _not_on_this_backend(error):
    return f"not available with the {keras.config.backend()} backend" in str(error)


def test_every_discovered_model_is_swept():
    """A BN model without a small configuration fails here, by name."""
    missing = [
        name
        for name in model_zoo.discovered_hub_backbones()
        if name not in model_zoo.TINY_BACKBONE_KWARGS
    ]
    assert not missing, (
        "keras-hub backbones with BatchNormalization but no small "
        f"configuration in tests/model_zoo.py TINY_BACKBONE_KWARGS: {missing}"
    )
    ids = {spec.id for spec in MODELS}
    assert set(model_zoo.discovered_hub_tasks()) <= ids
    # MobileNetV3 and ResNet50V2 build BN through other modules' code.
    assert {"MobileNetV3Small", "ResNet50V2", "ResNet50"} <= ids
    assert not ids & {"VGG16", "ConvNeXtTiny"}  # no BatchNormalization
    # Exactly one model of each code path runs on every push.
    for group, specs in _groups().items():
        assert [spec.full for spec in specs].count(False) == 1, group
    kinds = {group for family, group in _groups() if family == "hub_task"}
    assert {"ImageClassifier", "ImageSegmenter", "ObjectDetector"} <= kinds


def _groups():
    """`{(family, code path): [its models]}`, in the sweep's order."""
    groups = {}
    for spec in MODELS:
        groups.setdefault((spec.family, spec.group), []).append(spec)
    return groups


@pytest.mark.full
def test_representatives_are_the_smallest():
    """The model that represents a `keras.applications` module or a
    keras-hub backbone class on every push has the fewest parameters of
    its group."""
    for (family, group), specs in _groups().items():
        if family == "hub_task" or len(specs) == 1:
            continue
        sizes = {}
        for spec in specs:
            try:
                sizes[spec.id] = spec.build().count_params()
            except ValueError as error:
                if _not_on_this_backend(error):
                    continue
                raise
            keras.backend.clear_session()
        (representative,) = [spec.id for spec in specs if not spec.full]
        if representative in sizes:
            assert sizes[representative] == min(sizes.values()), (group, sizes)


def test_convert_copy_is_exact_and_leaves_the_model(case):
    before = testing.weights_of(case.model)
    classes = testing.layer_classes(case.model)
    converted = case.converted

    assert type(converted) is type(case.model)
    ours = testing.layers_of(converted, frozenbn.BatchNormalization)
    assert len(ours) == case.bn_count > 0
    assert all(layer.frozen for layer in ours)
    testing.assert_same_weight_values(case.model, converted)
    testing.assert_outputs_equal(case.reference, testing.outputs(converted, case.x))
    # The input model is untouched and shares no variable with the copy.
    assert testing.layer_classes(case.model) == classes
    for a, b in zip(before, testing.weights_of(case.model)):
        assert np.array_equal(a, b)
    assert not set(map(id, converted.weights)) & set(map(id, case.model.weights))


def test_frozen_training_mode_equals_inference(case):
    testing.disable_stochastic_layers(case.converted)
    training = testing.outputs(case.converted, case.x, training=True)
    testing.assert_outputs_close(case.reference, training, atol=1e-5, rtol=1e-5)


def test_keras_file_round_trip(case, tmp_path):
    converted, warned = case.conversion
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(case.model)
    testing.assert_same_weight_values(converted, loaded)
    testing.assert_outputs_equal(case.reference, testing.outputs(loaded, case.x))
    if testing.count_layers(loaded, frozenbn.BatchNormalization) == case.bn_count:
        assert not warned
        return
    # Only models whose config holds constructor arguments (keras-hub)
    # rebuild Keras BN on loading, and `convert` said so; both remedies
    # it names work.
    assert warned and case.spec.family != "applications"
    assert frozenbn.convert(loaded, inplace=True) is loaded
    assert testing.count_layers(loaded, frozenbn.BatchNormalization) == case.bn_count
    with frozenbn.patch():
        patched = keras.models.load_model(path)
    layers = testing.layers_of(patched, KERAS_BN)
    assert len(layers) == case.bn_count
    assert all(isinstance(l, frozenbn.BatchNormalization) and l.frozen for l in layers)
    testing.assert_outputs_equal(case.reference, testing.outputs(patched, case.x))


def _assert_every_bn_decided(model, paired, left):
    """Each BN layer of `model` is paired or left, by its path, and every
    left one says why."""
    decided = [bn for _, bn in paired] + [bn for bn, _ in left]
    paths = frozenbn._walk.paths(model)
    layers = testing.layers_of(model, KERAS_BN)
    assert sorted(decided) == sorted(paths[id(layer)] for layer in layers)
    assert all(reason for _, reason in left)


def test_fold_matches_and_reports_every_layer(case):
    folded, report = frozenbn.fold(case.model)
    _assert_every_bn_decided(case.model, report.pairs, report.left)
    kept = testing.count_layers(folded, KERAS_BN)
    called = testing.called_layers(case.model, case.x, KERAS_BN)
    assert kept <= len(report.left)
    assert len(report.pairs) + kept >= len(called)
    testing.assert_outputs_close(
        case.reference, testing.outputs(folded, case.x), case.tolerance, 1e-5
    )
    if case.floor_reaches_outputs:
        testing.assert_pairs_exact(case.model, frozenbn.fold, report.pairs)


def test_fuse_matches_and_unfuse_restores(case, caplog):
    with caplog.at_level(logging.WARNING, logger="frozenbn"):
        fused, report = frozenbn.fuse(case.converted)
    _assert_every_bn_decided(case.converted, report.pairs, report.left)
    testing.assert_outputs_close(
        case.reference, testing.outputs(fused, case.x), case.tolerance, 1e-5
    )
    if case.floor_reaches_outputs:
        testing.assert_pairs_exact(case.converted, frozenbn.fuse, report.pairs)
    if "reused layer(s)" in caplog.text:
        # fuse said it reused a layer that its config does not rebuild:
        # the fused model cannot be copied again, and unfuse refuses with
        # a message that names the layer.
        with pytest.raises(RuntimeError, match="cannot be rebuilt from its config") as error:
            frozenbn.unfuse(fused)
        assert any(f"'{l.name}'" in str(error.value) for l in fused._flatten_layers())
        return
    unfused, unfuse_report = frozenbn.unfuse(fused)
    assert len(unfuse_report.pairs) == len(report.pairs)
    assert testing.count_layers(unfused, FusedBatchNorm) == 0
    testing.assert_outputs_close(
        case.reference, testing.outputs(unfused, case.x), case.tolerance, 1e-5
    )


def test_recalibrate_writes_every_called_layer(case):
    converted = case.converted
    layers = testing.layers_of(converted, frozenbn.BatchNormalization)
    called = {
        id(layer)
        for layer in testing.called_layers(
            converted, case.x, frozenbn.BatchNormalization
        )
    }
    before = {id(l): testing.to_numpy(l.moving_mean).copy() for l in layers}
    updated = frozenbn.recalibrate(converted, case.x, verbose=0)
    assert updated == len(called) > 0
    for layer in layers:
        moved = not np.array_equal(
            before[id(layer)], testing.to_numpy(layer.moving_mean)
        )
        assert moved == (id(layer) in called), layer.name
        assert np.all(np.isfinite(testing.to_numpy(layer.moving_variance)))


def test_audit_reports_every_called_layer(case):
    before = testing.weights_of(case.model)
    report = frozenbn.audit(case.model, case.x)
    called = testing.called_layers(case.model, case.x, KERAS_BN)
    assert sorted(a.name for a in report.layers) == sorted(l.name for l in called)
    assert report.max_output_diff > 0  # randomized statistics: a real gap
    for a, b in zip(before, testing.weights_of(case.model)):
        assert np.array_equal(a, b)


def test_patch_builds_frozenbn_layers(case):
    with frozenbn.patch():
        patched = case.spec.build()
    layers = testing.layers_of(patched, KERAS_BN)
    assert len(layers) == case.bn_count
    assert all(isinstance(l, frozenbn.BatchNormalization) and l.frozen for l in layers)


def test_zz_convert_inplace_and_freeze(case):
    # Last for each model (pytest keeps definition order within a model):
    # it converts the fixture's model itself.
    model = case.model
    assert frozenbn.convert(model, inplace=True) is model
    assert testing.count_layers(model, frozenbn.BatchNormalization) == case.bn_count
    testing.assert_outputs_equal(case.reference, testing.outputs(model, case.x))
    assert frozenbn.unfreeze(model) == case.bn_count
    assert frozenbn.freeze(model) == case.bn_count
    with pytest.warns(UserWarning, match="freeze changed nothing"):
        assert frozenbn.freeze(model) == 0


def test_coverage_page_is_current():
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "coverage.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == model_zoo.coverage_markdown(), (
            "docs/coverage.md is stale: python -m tests.model_zoo > "
            "docs/coverage.md"
        )
