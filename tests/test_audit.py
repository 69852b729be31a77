"""Tests for `frozenbn.audit`."""

import json

import numpy as np
import pytest

import keras
from keras import ops

import frozenbn
from tests import testing
from frozenbn.audit import AuditReport
from frozenbn.audit import audit
from frozenbn.recalibrate import recalibrate


def _np(x):
    return ops.convert_to_numpy(x)


def _two_bn_model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="dense1")(inputs)
    h = keras.layers.BatchNormalization(name="bn_good")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Dense(8, name="dense2")(h)
    h = keras.layers.BatchNormalization(name="bn_bad")(h)
    outputs = keras.layers.Dense(1, name="out")(h)
    return keras.Model(inputs, outputs)


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 1.5, (n, 6)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 12).astype("float32")
    return x, y


def _corrupt(layer, shift=3.0, scale=9.0):
    layer.moving_mean.assign(_np(layer.moving_mean) + shift)
    layer.moving_variance.assign(_np(layer.moving_variance) * scale)


def test_pinpoints_the_layer_with_wrong_statistics():
    keras.utils.set_random_seed(0)
    model = _two_bn_model()
    x, y = _data()
    recalibrate(model, x, verbose=0)  # both layers consistent with the data
    _corrupt(model.get_layer("bn_bad"))
    weights = [_np(w).copy() for w in model.weights]

    report = audit(model, (x, y), loss="mse")

    assert [a.name for a in report.layers] == ["bn_bad", "bn_good"]
    bad, good = report.layers
    assert bad.score > 10 * good.score
    assert good.mean_shift < 1e-3 and abs(good.variance_ratio - 1) < 1e-3
    assert bad.variance_ratio == pytest.approx(1 / 9, rel=0.05)
    assert bad.batch_statistics_in_fit and good.batch_statistics_in_fit
    assert report.ratio == pytest.approx(
        report.inference_loss / report.train_loss
    )
    assert report.max_output_diff > 0.1
    assert report.samples == 96 and report.steps == 3
    # The model is unchanged.
    for old, w in zip(weights, model.weights):
        np.testing.assert_array_equal(old, _np(w))
    assert "call" not in vars(model.get_layer("bn_bad"))


def test_report_serializes_and_explains_remedies(tmp_path):
    keras.utils.set_random_seed(1)
    model = _two_bn_model()
    x, y = _data()
    report = audit(model, (x, y), loss="mse", batch_size=48)

    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["model_name"] == model.name
    assert [l["name"] for l in payload["layers"]] == [
        a.name for a in report.layers
    ]
    text = str(report)
    for expected in (
        "bn_good",
        "bn_bad",
        "frozenbn.recalibrate",
        "frozenbn.convert",
        "learning rate",
        "evaluate/fit ratio",
    ):
        assert expected in text
    path = report.plot(str(tmp_path / "audit.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_losses_match_hand_computed_values():
    keras.utils.set_random_seed(2)
    model = _two_bn_model()
    model.compile("sgd", "mse")
    x, y = _data(n=64)
    _corrupt(model.get_layer("bn_good"), shift=1.0, scale=4.0)

    report = audit(model, (x, y), batch_size=64)  # the compiled loss

    inference = _np(model(x, training=False))
    assert report.inference_loss == pytest.approx(
        float(np.mean((inference - y) ** 2)), rel=1e-5
    )
    # One batch holding all data: "as in fit" is the training-mode forward
    # pass of a copy (which may update the copy's statistics freely).
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    training = _np(copy(x, training=True))
    assert report.train_loss == pytest.approx(
        float(np.mean((training - y) ** 2)), rel=1e-4
    )
    assert report.max_output_diff == pytest.approx(
        float(np.abs(training - inference).max()), rel=1e-4
    )
    assert report.inference_loss == pytest.approx(
        model.evaluate(x, y, batch_size=64, verbose=0), rel=1e-5
    )


def test_frozen_layers_use_moving_statistics_and_show_no_gap():
    keras.utils.set_random_seed(3)
    model = frozenbn.convert(_two_bn_model(), frozen=True)
    x, y = _data()
    _corrupt(model.get_layer("bn_bad"))

    report = audit(model, (x, y), loss="mse")

    # Frozen statistics: fit computes what evaluate computes...
    assert report.max_output_diff == 0.0
    assert report.ratio == pytest.approx(1.0)
    # ...but the statistics still disagree with the data, which the layer
    # table shows (recalibrating would change the model).
    assert report.layers[0].name == "bn_bad"
    assert not any(a.batch_statistics_in_fit for a in report.layers)
    assert "moving" in str(report)


class _Brighten(keras.layers.Layer):
    """An augmentation layer written like Keras's: `training=True` default."""

    def call(self, x, training=True):
        return x + 1.0 if training else x


def test_augmentation_layers_run_in_inference_mode_in_both_passes():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((1, 2, 3))  # images: what RandomBrightness takes
    h = keras.layers.RandomBrightness((0.5, 0.5), value_range=(0.0, 10.0))(
        _Brighten()(inputs))
    h = keras.layers.Flatten()(h)
    model = frozenbn.convert(keras.Model(inputs, _two_bn_model()(h)))
    x, y = _data()
    x = x.reshape(-1, 1, 2, 3)

    report = audit(model, (x, y), loss="mse", verbose=0)

    # Every BN frozen: only augmentation could make the passes differ.
    assert report.max_output_diff == 0.0
    assert report.ratio == pytest.approx(1.0)
    assert report.inference_loss == pytest.approx(
        float(np.mean((_np(model(x, training=False)) - y) ** 2)), rel=1e-5)


class _Block(keras.layers.Layer):
    """A block holding a BN layer, whose `call` defaults to training."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=True):
        return self.bn(x, training=training)


def test_blocks_holding_bn_run_as_in_fit_whatever_their_default():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, _Block()(keras.layers.Dense(4)(inputs)))
    _corrupt(model.layers[-1].bn)
    x, y = _data()

    report = audit(model, x, verbose=0)

    # Its BN normalizes with batch statistics, as in `fit`: the gap shows.
    assert report.layers[0].batch_statistics_in_fit
    assert report.max_output_diff > 1.0


class _NoTrainingArgument(keras.Model):
    """A subclassed model whose `call` takes no `training` (Keras allows it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn(self.dense(x))


def test_models_whose_call_takes_no_training_argument():
    model = _NoTrainingArgument(name="no_training")
    x, _ = _data()
    model(x)
    _corrupt(model.bn)

    report = audit(model, x, verbose=0)

    assert report.layers[0].batch_statistics_in_fit
    assert report.max_output_diff > 1.0


def test_without_labels_or_loss():
    keras.utils.set_random_seed(4)
    model = _two_bn_model()
    x, _ = _data()
    report = audit(model, x)
    assert report.train_loss is None and report.ratio is None
    assert report.to_dict()["inference_loss"] is None
    assert len(report.layers) == 2
    assert "Loss" not in str(report)


def test_frozen_wrapper_and_training_false_in_graph():
    keras.utils.set_random_seed(5)
    inner_in = keras.Input((6,))
    inner = keras.Model(
        inner_in, keras.layers.BatchNormalization(name="inner_bn")(inner_in)
    )
    inputs = keras.Input((6,))
    h = frozenbn.Frozen(inner)(inputs)
    h = keras.layers.BatchNormalization(name="outer_bn")(h)
    model = keras.Model(inputs, h)
    x, _ = _data()
    report = audit(model, x)
    uses = {a.name: a.batch_statistics_in_fit for a in report.layers}
    assert uses == {"inner_bn": False, "outer_bn": True}

    # The Keras transfer-learning recipe `base(x, training=False)`: Keras
    # 3 hands the call context's `training=True` of `fit` to the nested
    # model anyway, so its BN normalizes with batch statistics in fit (and
    # updates them): audit reports what fit does, a gap...
    inputs = keras.Input((6,))
    model = keras.Model(inputs, inner(inputs, training=False))
    assert audit(model, x).max_output_diff > 1.0
    before = testing.to_numpy(inner.layers[-1].moving_mean).copy()
    model(x, training=True)  # what fit's forward pass does
    assert not np.array_equal(before, testing.to_numpy(inner.layers[-1].moving_mean))
    # ...which frozenbn.Frozen closes.
    inputs = keras.Input((6,))
    model = keras.Model(inputs, frozenbn.Frozen(inner)(inputs))
    assert audit(model, x).max_output_diff == 0.0


def test_labels_none_is_auditing_without_labels():
    keras.utils.set_random_seed(6)
    model = _two_bn_model()
    x, _ = _data()

    with_none = audit(model, (x, None), loss="mse", verbose=0)
    without = audit(model, x, loss="mse", verbose=0)

    assert with_none.train_loss is None and without.train_loss is None
    assert with_none.max_output_diff == without.max_output_diff > 0


def test_rejects_bad_arguments():
    model = _two_bn_model()
    x, y = _data(n=8)
    with pytest.raises(TypeError, match="audit"):
        audit(None, (x, y))
    with pytest.raises(ValueError, match="loss"):
        audit(model, (x, y), loss="not_a_loss")
    with pytest.raises(ValueError, match="no batches"):
        audit(model, iter([]))


def test_steps_limit_the_batches_audited():
    model = _two_bn_model()
    x, _ = _data(n=8)
    report = audit(model, x, steps=1, batch_size=4)
    assert isinstance(report, AuditReport)
    assert (report.steps, report.samples) == (1, 4)
    assert len(report.layers) == 2


def test_fewer_samples_than_the_batch_size_warns_and_says_what_it_audited():
    model = _two_bn_model()
    x, y = _data(n=12)
    with pytest.warns(UserWarning, match=r"^frozenbn.audit: `x` holds 12 "
                      r"sample\(s\), fewer than batch_size=32, so it audited "
                      r"batches of 12"):
        report = audit(model, (x, y), batch_size=32, verbose=0)
    assert report.batch_size == 12
    assert "at batch size 12" in str(report.recommendation)
    with testing.no_frozenbn_warnings(UserWarning):
        assert audit(model, (x, y), batch_size=12, verbose=0).batch_size == 12
