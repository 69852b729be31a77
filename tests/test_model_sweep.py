"""Every tool on every BatchNormalization model the installed packages ship.

The models come from `tests/model_zoo.py`, which derives them from the
installed `keras.applications` and keras-hub (backbones and image tasks),
so a new model is swept without editing this file. Each model is built
once (a module-scoped parametrized fixture: pytest runs all checks of one
model before building the next) with random weights and randomized BN
statistics, at a small input size.
"""

import warnings

import keras
import numpy as np
import pytest

import frozenbn
from tests import model_zoo
from tests import testing

MODELS = model_zoo.all_models()


def _marks(spec):
    return [pytest.mark.slow] if spec.slow else []


@pytest.fixture(
    scope="module",
    params=[pytest.param(spec, marks=_marks(spec), id=spec.id) for spec in MODELS],
)
def zoo(request):
    spec = request.param
    model = testing.randomize_batch_norm(spec.build())
    x = testing.images(2, spec.image_size, seed=1)
    reference = testing.outputs(model, x)
    yield spec, model, x, reference
    del model
    keras.backend.clear_session()


def test_every_discovered_model_is_swept():
    """A BN model without a small configuration fails here, by name."""
    missing = [
        name
        for name in model_zoo.discovered_hub_backbones()
        if name not in model_zoo.TINY_BACKBONE_KWARGS
    ]
    assert not missing, (
        f"keras-hub backbones with BatchNormalization but no small "
        f"configuration in tests/model_zoo.py TINY_BACKBONE_KWARGS: {missing}"
    )
    ids = {spec.id for spec in MODELS}
    for name in model_zoo.discovered_hub_tasks():
        assert name in ids
    # keras.applications: MobileNetV3 and ResNet50V2 build on other modules.
    assert {"MobileNetV3Small", "ResNet50V2", "ResNet50"} <= ids
    assert not ids & {"VGG16", "ConvNeXtTiny"}  # no BatchNormalization


def test_models_contain_batch_norm(zoo):
    spec, model, x, reference = zoo
    assert testing.count_layers(model, keras.layers.BatchNormalization) > 0


def test_convert_copy_is_exact_and_leaves_the_model(zoo):
    spec, model, x, reference = zoo
    before = testing.weights_of(model)
    classes = testing.layer_classes(model)
    converted = frozenbn.convert(model)

    assert type(converted) is type(model)
    assert testing.count_layers(
        converted, frozenbn.BatchNormalization
    ) == testing.count_layers(model, keras.layers.BatchNormalization)
    assert all(
        layer.frozen
        for layer in testing.layers_of(converted, frozenbn.BatchNormalization)
    )
    testing.assert_same_weight_values(model, converted)
    testing.assert_outputs_equal(reference, testing.outputs(converted, x))
    # The input model is untouched.
    assert testing.layer_classes(model) == classes
    for a, b in zip(before, testing.weights_of(model)):
        assert np.array_equal(a, b)
    assert not set(map(id, converted.weights)) & set(map(id, model.weights))


def test_frozen_training_mode_equals_inference(zoo):
    spec, model, x, reference = zoo
    converted = frozenbn.convert(model)
    testing.disable_stochastic_layers(converted)
    training = testing.outputs(converted, x, training=True)
    testing.assert_outputs_close(reference, training, atol=1e-5, rtol=1e-5)


def test_keras_file_round_trip_and_inplace(zoo, tmp_path):
    spec, model, x, reference = zoo
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = frozenbn.convert(model)
    warned = any("rebuilds its layers" in str(w.message) for w in caught)
    count = testing.count_layers(converted, frozenbn.BatchNormalization)
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    testing.assert_same_weight_values(converted, loaded)
    testing.assert_outputs_equal(reference, testing.outputs(loaded, x))
    if testing.count_layers(loaded, frozenbn.BatchNormalization) != count:
        # Only models whose config holds constructor arguments (keras-hub)
        # lose the class, and `convert` said so; the remedies work.
        assert warned and spec.family != "applications"
        with frozenbn.patch():
            loaded = keras.models.load_model(path)
        assert testing.count_layers(loaded, frozenbn.BatchNormalization) == count
        testing.assert_outputs_equal(reference, testing.outputs(loaded, x))
    else:
        assert not warned

    # A stock model loaded from a file, converted in place.
    model.save(str(tmp_path / "stock.keras"))
    stock = keras.models.load_model(str(tmp_path / "stock.keras"))
    bn_count = testing.count_layers(stock, keras.layers.BatchNormalization)
    assert frozenbn.convert(stock, inplace=True) is stock
    assert testing.count_layers(stock, frozenbn.BatchNormalization) == bn_count
    testing.assert_outputs_equal(reference, testing.outputs(stock, x))
    assert frozenbn.unfreeze(stock) == bn_count
    assert frozenbn.freeze(stock) == bn_count


def test_fold_matches_or_says_why(zoo):
    spec, model, x, reference = zoo
    try:
        folded, report = frozenbn.fold(model)
    except RuntimeError as error:
        # A clear refusal: it names the layer that cannot be copied, and why.
        message = str(error)
        assert "cannot be rebuilt from its config" in message
        names = {layer.name for layer in model._flatten_layers()}
        assert any(f"'{name}'" in message for name in names)
        return
    layers = testing.layers_of(model, keras.layers.BatchNormalization)
    decided = sorted([bn for _, bn in report.folded] + [bn for bn, _ in report.left])
    assert decided == sorted(layer.name for layer in layers)
    assert all(reason for _, reason in report.left)
    kept = testing.count_layers(folded, keras.layers.BatchNormalization)
    called = testing.called_layers(model, x, keras.layers.BatchNormalization)
    assert kept <= len(report.left)
    assert len(report.folded) + kept >= len(called)
    testing.assert_outputs_close(
        reference, testing.outputs(folded, x), atol=1e-5, rtol=1e-5
    )


def test_recalibrate_writes_every_called_layer(zoo):
    spec, model, x, reference = zoo
    converted = frozenbn.convert(model)
    layers = testing.layers_of(converted, frozenbn.BatchNormalization)
    called = {id(l) for l in testing.called_layers(converted, x, frozenbn.BatchNormalization)}
    before = {id(l): testing.to_numpy(l.moving_mean).copy() for l in layers}
    updated = frozenbn.recalibrate(converted, x, verbose=0)
    assert updated == len(called)
    for layer in layers:
        after = testing.to_numpy(layer.moving_mean)
        assert np.array_equal(before[id(layer)], after) == (id(layer) not in called)
        assert np.all(np.isfinite(testing.to_numpy(layer.moving_variance)))


def test_audit_reports_every_called_layer(zoo):
    spec, model, x, reference = zoo
    before = testing.weights_of(model)
    report = frozenbn.audit(model, x)
    called = testing.called_layers(model, x, keras.layers.BatchNormalization)
    assert sorted(a.name for a in report.layers) == sorted(l.name for l in called)
    assert report.max_output_diff > 0  # randomized statistics: a real gap
    for a, b in zip(before, testing.weights_of(model)):
        assert np.array_equal(a, b)


def test_patch_builds_frozenbn_layers(zoo):
    spec, model, x, reference = zoo
    with frozenbn.patch():
        patched = spec.build()
    layers = testing.layers_of(patched, keras.layers.BatchNormalization)
    assert layers and all(isinstance(l, frozenbn.BatchNormalization) for l in layers)
    assert all(layer.frozen for layer in layers)
    assert len(layers) == testing.count_layers(model, keras.layers.BatchNormalization)
