"""Tests of `frozenbn._advice.recommend` and its place in `audit`."""

import json
import math

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn import _advice



@pytest.mark.parametrize(
    "scores, in_fit, ratio, remedy",
    [
        # Fit's batch statistics close to the moving ones: train as usual,
        # then recalibrate (the benchmark at batch 16 and 32).
        ([0.2, 1.4], [True, True], None, _advice.RECALIBRATE),
        ([0.2, 0.3], [True, True], 4.9, _advice.RECALIBRATE),
        ([0.2, 1.4], [False, False], None, _advice.NONE),
        # Far from them: freeze (the benchmark at batch 4).
        ([0.2, 1.6], [True, True], None, _advice.FREEZE),
        ([0.2, math.nan], [True, True], None, _advice.FREEZE),
        ([0.2, 1.6], [True, False], 4.9, _advice.FREEZE),
        # The gap in a model trained with batch statistics: recalibrate.
        ([0.2, 3.0], [True, True], 40.0, _advice.RECALIBRATE),
        ([0.2, 0.3], [True, False], 6.0, _advice.RECALIBRATE),
        ([0.2, 0.3], [True, True], math.inf, _advice.RECALIBRATE),
        # Every layer already on its moving statistics, which do not fit
        # the data, or the gap: recalibrate them.
        ([0.2, 1.6], [False, False], None, _advice.RECALIBRATE_THEN_FREEZE),
        ([0.2, 0.3], [False, False], 40.0, _advice.RECALIBRATE_THEN_FREEZE),
        ([], [], None, _advice.NONE),
    ],
)
def test_recommend_rule(scores, in_fit, ratio, remedy):
    advice = _advice.recommend(scores, in_fit, ratio)
    assert advice.remedy == remedy, advice
    assert advice.reason and "\n" not in advice.reason
    assert str(advice).startswith(remedy + ": ")


def test_recommend_reason_names_the_measurements():
    advice = _advice.recommend([0.1, 2.5], [True, True], ratio=12.0)
    assert "2.5" in advice.reason and "12" in advice.reason
    assert "frozenbn.recalibrate" in advice.reason
    advice = _advice.recommend([0.1, 2.5], [True, True])
    assert "1.5" in advice.reason and "frozenbn.convert" in advice.reason


def test_recommend_reason_compares_each_measurement_with_its_threshold():
    # The ratio is never compared with the drift threshold, nor the drift
    # score with the ratio's.
    advice = _advice.recommend([0.2, 0.3], [True, True], ratio=4.9)
    assert advice.reason.startswith(
        "worst layer drift score 0.3, evaluate/fit loss ratio 4.9; drift at "
        "most 1.5: "), advice
    advice = _advice.recommend([0.2, 2.5], [False, False], ratio=40.0)
    assert "drift above 1.5" in advice.reason, advice
    advice = _advice.recommend([0.2, 0.3], [False, False], ratio=40.0)
    assert "ratio above 5" in advice.reason, advice
    assert "no layer with batch statistics" in advice.reason, advice
    assert "<=" not in advice.reason and "drift above" not in advice.reason


def test_recommend_freezes_under_the_small_batch_size():
    """Under `SMALL_BATCH`, fit's batch statistics are too noisy to train on
    whatever the drift score; the gap and frozen layers come first."""
    small = _advice.SMALL_BATCH - 1
    advice = _advice.recommend([0.2], [True], batch_size=small)
    assert advice.remedy == _advice.FREEZE
    assert f"at batch size {small}" in advice.reason
    assert f"batches under {_advice.SMALL_BATCH}" in advice.reason
    advice = _advice.recommend([0.2], [True], batch_size=_advice.SMALL_BATCH)
    assert advice.remedy == _advice.RECALIBRATE
    assert _advice.recommend([0.2], [True], 40.0, batch_size=4).remedy == (
        _advice.RECALIBRATE)
    assert _advice.recommend([0.2], [False], batch_size=4).remedy == (
        _advice.NONE)
    assert _advice.recommend([0.2], [True], batch_size=4,
                             small_batch=4).remedy == _advice.RECALIBRATE


def test_recommend_thresholds_are_arguments():
    assert _advice.recommend([2.0], [True]).remedy == _advice.FREEZE
    assert _advice.recommend([2.0], [True], drift_score=3.0).remedy == (
        _advice.RECALIBRATE)
    assert _advice.recommend([0.1], [True], 3.0, gap_ratio=2.0).remedy == (
        _advice.RECALIBRATE)
    assert _advice.recommend([0.1], [False], 3.0, gap_ratio=2.0).remedy == (
        _advice.RECALIBRATE_THEN_FREEZE)


def test_recommend_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one entry per layer"):
        _advice.recommend([0.1, 0.2], [True])



def _model():
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(4),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def test_audit_reports_the_recommendation_it_measures():
    """Moving statistics 0/1 on data of mean 5, which fit normalizes with
    batch statistics: freeze; after recalibrating: train, then recalibrate;
    frozen with the wrong statistics: recalibrate them; frozen with the
    right ones: nothing to do."""
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (64, 4)).astype("float32")
    model = _model()
    report = frozenbn.audit(model, x)
    assert report.layers[0].score > _advice.DRIFT_SCORE
    assert report.recommendation.remedy == _advice.FREEZE
    assert "Recommendation: freeze" in str(report)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["recommendation"]["remedy"] == "freeze"

    report = frozenbn.audit(frozenbn.convert(model), x)
    assert report.recommendation.remedy == _advice.RECALIBRATE_THEN_FREEZE

    frozenbn.recalibrate(model, x, verbose=0)
    report = frozenbn.audit(model, x)
    assert report.layers[0].score < 1e-3
    assert report.recommendation.remedy == _advice.RECALIBRATE

    report = frozenbn.audit(frozenbn.convert(model), x)
    assert report.recommendation.remedy == _advice.NONE


def test_audit_recommends_recalibrate_for_a_model_with_the_gap():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, (64, 4)).astype("float32")
    y = (x[:, :1] > 5.0).astype("float32")
    model = _model()
    # Inference on moving statistics 0/1 saturates the sigmoid: a large
    # evaluate loss against the batch-normalized fit-mode loss.
    model.layers[0].set_weights([np.eye(4, dtype="float32"),
                                 np.zeros(4, "float32")])
    model.layers[2].set_weights([np.array([[3.0], [0], [0], [0]], "float32"),
                                 np.zeros(1, "float32")])
    report = frozenbn.audit(model, (x, y), loss="binary_crossentropy")
    assert report.ratio > _advice.GAP_RATIO, str(report)
    assert report.recommendation.remedy == _advice.RECALIBRATE



def test_audit_advice_follows_the_batch_size():
    """The drift score is measured as fit normalizes, so it depends on the
    batch size: statistics recalibrated on the data, audited at batch 64:
    fit's batch statistics are close to them, train then recalibrate; at
    batch 1, fit normalizes every one-sample batch to beta, so the second
    BN layer's input is constant as fit runs it: freeze."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(8),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Dense(8),
        keras.layers.BatchNormalization(),
    ])
    x = np.random.default_rng(0).normal(0.0, 1.0, (128, 8)).astype("float32")
    frozenbn.recalibrate(model, x, verbose=0)

    report = frozenbn.audit(model, x, batch_size=64)
    assert report.batch_size == 64
    assert report.layers[0].score < 0.2, str(report)
    assert report.recommendation.remedy == _advice.RECALIBRATE
    assert "(2 batches of up to 64)" in str(report)

    # Batches of 8: statistics still close, but too few samples to train
    # on: freeze, for the batch size.
    report = frozenbn.audit(model, x, batch_size=8)
    assert report.batch_size == 8
    assert report.layers[0].score <= _advice.DRIFT_SCORE, str(report)
    assert report.recommendation.remedy == _advice.FREEZE
    assert f"batches under {_advice.SMALL_BATCH}" in (
        report.recommendation.reason)

    report = frozenbn.audit(model, x, batch_size=1)
    assert report.layers[0].name == model.layers[4].name
    assert report.layers[0].score > 5.0, str(report)
    assert report.recommendation.remedy == _advice.FREEZE
