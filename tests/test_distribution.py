"""frozenbn under data parallelism: tf.distribute and keras.distribution.

Each scenario needs two devices configured before its backend starts, so it
runs in a subprocess (`tests/distributed_scenarios.py`) with its own
`KERAS_BACKEND`, whatever backend this test run uses. The subprocess prints
its measurements as JSON; the assertions are here.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "distributed_scenarios.py")


def _scenario(backend, **env):
    environ = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=REPO,
        TF_CPP_MIN_LOG_LEVEL="3",
        **env,
    )
    run = subprocess.run(
        [sys.executable, SCRIPT, backend],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    lines = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _same_on_all(replicas):
    first = np.asarray(replicas[0])
    for other in replicas[1:]:
        np.testing.assert_array_equal(np.asarray(other), first)
    return first


@pytest.fixture(scope="module")
def tf_result():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    return _scenario("tensorflow")


def test_mirrored_fit_keeps_statistics_on_every_replica(tf_result):
    assert tf_result["replicas"] == 2
    case = tf_result["converted"]
    assert np.all(np.isfinite(case["loss"]))
    for name, after in case["after"].items():
        before = case["before"][name]
        assert after["class"] == "frozenbn.layers.BatchNormalization"
        assert after["frozen"] is True
        assert after["mirrored"] == "MirroredVariable"
        assert len(after["mean_replicas"]) == 2
        mean = _same_on_all(after["mean_replicas"])
        var = _same_on_all(after["var_replicas"])
        np.testing.assert_array_equal(mean, before["mean"])
        np.testing.assert_array_equal(var, before["var"])
        gamma = _same_on_all(after["gamma_replicas"])
        beta = _same_on_all(after["beta_replicas"])
        assert np.max(np.abs(gamma - np.asarray(before["gamma"]))) > 1e-4
        assert np.max(np.abs(beta - np.asarray(before["beta"]))) > 1e-4
    # Distributed predict is the single-model inference.
    assert case["predict_vs_eager"] <= 1e-6


def test_mirrored_synchronized_layers_frozen_and_unfrozen(tf_result):
    frozen = tf_result["synchronized"]
    for name, after in frozen["after"].items():
        before = frozen["before"][name]
        assert after["frozen"] is True
        np.testing.assert_array_equal(
            _same_on_all(after["mean_replicas"]), before["mean"]
        )
        np.testing.assert_array_equal(
            _same_on_all(after["var_replicas"]), before["var"]
        )
        gamma = _same_on_all(after["gamma_replicas"])
        assert np.max(np.abs(gamma - np.asarray(before["gamma"]))) > 1e-4
    # Frozen, `synchronized` changes nothing: the same training as without it.
    plain = tf_result["converted"]["after"]
    for name, after in frozen["after"].items():
        np.testing.assert_allclose(
            after["gamma_replicas"][0],
            plain[name]["gamma_replicas"][0],
            rtol=1e-5,
            atol=1e-6,
        )
    # Control: unfrozen synchronized layers do move their statistics, and
    # the cross-replica reduction keeps the replicas equal.
    unfrozen = tf_result["synchronized_unfrozen"]
    for name, after in unfrozen["after"].items():
        assert after["frozen"] is False
        mean = _same_on_all(after["mean_replicas"])
        moved = np.abs(mean - np.asarray(unfrozen["before"][name]["mean"]))
        assert moved.max() > 1e-3


def test_mirrored_recalibrate_equals_single_device(tf_result):
    assert tf_result["recalibrated_mirrored"] == 2
    assert tf_result["recalibrated_single"] == 2
    for name, stats in tf_result["recalibrate"].items():
        mean = _same_on_all(stats["mean_replicas"])
        var = _same_on_all(stats["var_replicas"])
        np.testing.assert_allclose(
            mean, stats["mean_single"], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(var, stats["var_single"], rtol=1e-5)
        # And the statistics really were replaced (moving_mean started at 0).
        assert np.max(np.abs(mean)) > 0.05


def test_jax_data_parallel_fit_keeps_replicated_statistics():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    result = _scenario(
        "jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    assert len(result["devices"]) == 2
    assert np.all(np.isfinite(result["loss"]))
    for name, after in result["after"].items():
        before = result["before"][name]
        assert after["frozen"] is True
        for key in ("mean_shards", "var_shards", "gamma_shards"):
            shards = after[key]
            assert shards["replicated"] is True
            assert shards["devices"] == ["cpu:0", "cpu:1"]
            _same_on_all(shards["values"])
        np.testing.assert_array_equal(after["mean"], before["mean"])
        np.testing.assert_array_equal(after["var"], before["var"])
        np.testing.assert_array_equal(
            after["mean_shards"]["values"][0], before["mean"]
        )
        np.testing.assert_array_equal(
            after["var_shards"]["values"][1], before["var"]
        )
        gamma = np.asarray(after["gamma"]) - np.asarray(before["gamma"])
        beta = np.asarray(after["beta"]) - np.asarray(before["beta"])
        assert np.max(np.abs(gamma)) > 1e-4
        assert np.max(np.abs(beta)) > 1e-4
    # recalibrate under DataParallel equals the single-device result.
    assert result["recalibrated"] == 2
    for name, stats in result["recalibrate"].items():
        assert stats["mean_shards"]["replicated"] is True
        assert len(stats["mean_shards"]["values"]) == 2
        mean = _same_on_all(stats["mean_shards"]["values"])
        var = _same_on_all(stats["var_shards"]["values"])
        np.testing.assert_allclose(
            mean, stats["mean_single"], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(var, stats["var_single"], rtol=1e-5)
        assert np.max(np.abs(mean)) > 0.05
