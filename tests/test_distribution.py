"""frozenbn under data parallelism: tf.distribute and keras.distribution.

Each scenario needs two devices configured before its backend starts, so it
runs in a subprocess (`tests/distributed_scenarios.py`) with its own
`KERAS_BACKEND`, whatever backend this test run uses. The subprocess prints
its measurements as JSON; the assertions are here.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import testing

# Under `pytest -n N` one worker runs the whole module
# (`testing.SHARED_WORKER_MODULES`), so its module fixtures are built once.

# A scenario's subprocess runs its own backend whatever this run's is, so
# each runs once: in the run of its backend.
TF_SCENARIO = testing.requires_backend(
    "tensorflow", reason="a TensorFlow subprocess: it runs in the TensorFlow run")
JAX_SCENARIO = testing.requires_backend(
    "jax", reason="a JAX subprocess: it runs in the JAX run")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "distributed_scenarios.py")


def _environ(backend, **env):
    return dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=REPO,
        TF_CPP_MIN_LOG_LEVEL="3",
        **env,
    )


def _result(stdout, stderr, returncode):
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert returncode == 0 and lines, stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    # No warning from frozenbn: in particular, no eager fallback.
    assert result["warnings"] == []
    return result


def _scenario(backend, **env):
    run = subprocess.run(
        [sys.executable, SCRIPT, backend],
        capture_output=True,
        text=True,
        env=_environ(backend, **env),
        timeout=300,
    )
    return _result(run.stdout, run.stderr, run.returncode)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _processes(backend, scenario, argvs, envs):
    """Runs one scenario process per argv concurrently; their results."""
    procs = [
        subprocess.Popen(
            [sys.executable, SCRIPT, scenario, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_environ(backend, **env),
        )
        for argv, env in zip(argvs, envs)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [
        _result(out, err, p.returncode) for (out, err), p in zip(outputs, procs)
    ]


def _assert_statistics_equal(got, expected):
    assert set(got) == set(expected)
    for name, stats in got.items():
        np.testing.assert_allclose(
            stats["mean"], expected[name]["mean"], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            stats["var"], expected[name]["var"], rtol=1e-5
        )
        # And the statistics really were replaced (they started near 0.3).
        assert np.max(np.abs(np.asarray(stats["mean"]) - 0.3)) > 0.5


def _same_on_all(replicas):
    first = np.asarray(replicas[0])
    for other in replicas[1:]:
        np.testing.assert_array_equal(np.asarray(other), first)
    return first


@pytest.fixture(scope="module")
def tf_result():
    return _scenario("tensorflow")


@TF_SCENARIO
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


@TF_SCENARIO
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


@TF_SCENARIO
@pytest.mark.parametrize("case", ["per_replica", "synchronized"])
def test_mirrored_recalibrate_equals_single_device(tf_result, case):
    result = tf_result["recalibrate"][case]
    assert result["count"] == 2
    for name, stats in result["layers"].items():
        mean = _same_on_all(stats["mean_replicas"])
        var = _same_on_all(stats["var_replicas"])
        _assert_statistics_equal(
            {name: {"mean": mean, "var": var}},
            {name: {"mean": stats["mean_single"], "var": stats["var_single"]}},
        )


@TF_SCENARIO
def test_mirrored_audit_equals_single_device(tf_result):
    """audit pools over the replicas: each measures its half of a batch of
    16, as one device measures batches of 8 (statistics and losses)."""
    mirrored, single = tf_result["audit"]["mirrored"], tf_result["audit"]["single"]
    assert sorted(mirrored["layers"]) == ["bn_conv", "bn_dense"]
    np.testing.assert_allclose(
        [mirrored["train_loss"], mirrored["inference_loss"]],
        [single["train_loss"], single["inference_loss"]], rtol=1e-5)
    for name, values in mirrored["layers"].items():
        np.testing.assert_allclose(values, single["layers"][name], rtol=1e-4)
    assert single["inference_loss"] > 1.5 * single["train_loss"]


@TF_SCENARIO
def test_multi_worker_recalibrate_pools_the_shards_of_all_workers():
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    envs = [
        {
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}
            )
        }
        for i in range(2)
    ]
    first, second = _processes(
        "tensorflow", "tensorflow-worker", [["0"], ["1"]], envs
    )
    assert first["workers"] == second["workers"] == 2
    assert first["count"] == second["count"] == 2
    # Each worker saw only its shard (40 or 24 images) and both end with
    # the statistics of all 64, as one process computes them.
    _assert_statistics_equal(first["statistics"], first["single"])
    _assert_statistics_equal(second["statistics"], first["single"])


@JAX_SCENARIO
def test_jax_processes_recalibrate_pools_the_shards_of_all_processes():
    [port] = _free_ports(1)
    first, second = _processes(
        "jax", "jax-process", [["0", str(port)], ["1", str(port)]], [{}, {}]
    )
    assert first["devices"] == second["devices"] == 2
    assert first["count"] == second["count"] == 2
    assert first["replicated"] and second["replicated"]
    _assert_statistics_equal(first["statistics"], first["single"])
    _assert_statistics_equal(second["statistics"], first["single"])
    # audit: the layers' statistics of both processes' data, as one process
    # measures the global batches; each process's losses are those of its
    # own half (16 images each, so their mean is the global batches' loss).
    single = first["audit_single"]
    for got in (first["audit"], second["audit"]):
        assert sorted(got["layers"]) == ["bn_conv", "bn_dense"]
        for name, values in got["layers"].items():
            np.testing.assert_allclose(values, single["layers"][name], rtol=1e-4)
    for key in ("train_loss", "inference_loss"):
        np.testing.assert_allclose(
            (first["audit"][key] + second["audit"][key]) / 2, single[key],
            rtol=1e-5)


@JAX_SCENARIO
def test_jax_data_parallel_fit_keeps_replicated_statistics():
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
