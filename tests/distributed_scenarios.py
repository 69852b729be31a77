"""Multi-device scenarios for tests/test_distribution.py, one per process.

Logical devices must be configured before the backend initializes, so each
scenario runs in its own interpreter: `python tests/distributed_scenarios.py
{tensorflow,jax}`. It sets up two devices on the CPU, runs the scenario and
prints one JSON line of measurements (prefixed `RESULT `); the test asserts
on them. Not collected by pytest (no `test_` prefix).
"""

import json
import logging
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(keras, bn_kwargs):
    """A tiny Conv2D + BN + Dense + BN classifier with non-trivial BN stats."""
    import frozenbn

    del frozenbn  # registers the layers
    keras.utils.set_random_seed(0)  # every scenario starts from one model
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="bn_conv", **bn_kwargs),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="dense"),
            keras.layers.BatchNormalization(name="bn_dense", **bn_kwargs),
            keras.layers.Dense(1, name="head"),
        ]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.3, 0.5, n).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2.0, n).astype("float32")
            )
    return model


def _data(n=32):
    rng = np.random.default_rng(1)
    x = rng.normal(1.5, 2.0, (n, 6, 6, 2)).astype("float32")
    y = rng.normal(0.0, 1.0, (n, 1)).astype("float32")
    return x, y


def _calibration_data(n):
    x = np.random.default_rng(2).normal(-1.0, 3.0, (n, 6, 6, 2))
    return x.astype("float32")


def _values(variable):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(variable)).tolist()


def _statistics(model):
    return {
        name: {
            "mean": _values(model.get_layer(name).moving_mean),
            "var": _values(model.get_layer(name).moving_variance),
        }
        for name in _bn_names(model)
    }


def _audit(model, data, **kwargs):
    """What `frozenbn.audit` measured: losses and per-layer statistics."""
    import frozenbn

    report = frozenbn.audit(model, data, loss="mse", verbose=0, **kwargs)
    return {
        "train_loss": report.train_loss,
        "inference_loss": report.inference_loss,
        "layers": {a.name: [a.mean_shift, a.variance_ratio, a.score]
                   for a in report.layers},
    }


def _bn_names(model):
    return [
        layer.name
        for layer in model.layers
        if "BatchNormalization" in type(layer).__name__
    ]


def run_tensorflow():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu,
        [
            tf.config.LogicalDeviceConfiguration(),
            tf.config.LogicalDeviceConfiguration(),
        ],
    )
    import keras

    import frozenbn

    devices = ["/cpu:0", "/cpu:1"]
    strategy = tf.distribute.MirroredStrategy(devices)
    x, y = _data()
    out = {"replicas": strategy.num_replicas_in_sync}

    def replica_values(variable):
        # A Keras variable wraps a tf.distribute MirroredVariable.
        local = strategy.experimental_local_results(variable.value)
        return [np.asarray(v.numpy()).tolist() for v in local]

    def fit_case(key, bn_kwargs, do_convert, frozen=True):
        with strategy.scope():
            model = _model(keras, bn_kwargs)
            if do_convert:
                model = frozenbn.convert(model, frozen=frozen)
            model.compile(keras.optimizers.SGD(0.003), "mse")
        bns = [model.get_layer(n) for n in _bn_names(model)]
        before = {
            b.name: {
                "mean": np.asarray(b.moving_mean.numpy()).tolist(),
                "var": np.asarray(b.moving_variance.numpy()).tolist(),
                "gamma": np.asarray(b.gamma.numpy()).tolist(),
                "beta": np.asarray(b.beta.numpy()).tolist(),
            }
            for b in bns
        }
        history = model.fit(
            x, y, batch_size=8, epochs=2, shuffle=False, verbose=0
        )
        after = {
            b.name: {
                "class": type(b).__module__ + "." + type(b).__name__,
                "frozen": getattr(b, "frozen", None),
                "mirrored": type(b.moving_mean.value).__name__,
                "mean_replicas": replica_values(b.moving_mean),
                "var_replicas": replica_values(b.moving_variance),
                "gamma_replicas": replica_values(b.gamma),
                "beta_replicas": replica_values(b.beta),
            }
            for b in bns
        }
        prediction = model.predict(x, batch_size=8, verbose=0)
        eager = model(x, training=False)
        out[key] = {
            "loss": history.history["loss"],
            "before": before,
            "after": after,
            "predict_vs_eager": float(
                np.max(np.abs(prediction - np.asarray(eager)))
            ),
        }

    fit_case("converted", {}, do_convert=True)
    fit_case("synchronized", {"synchronized": True}, do_convert=True)
    fit_case(
        "synchronized_unfrozen",
        {"synchronized": True},
        do_convert=True,
        frozen=False,
    )

    # recalibrate under the strategy: each replica pools its half of every
    # batch (normalized as in `fit`, with its own batch statistics; the
    # global batch's for synchronized layers), all replicas all-reduced.
    # The reference: one device, batches of one replica's size, which are
    # the same sets of images (or the global batches, when synchronized).
    xr = _calibration_data(48)
    out["recalibrate"] = {}
    for key, bn_kwargs, reference_batch in (
        ("per_replica", {}, 8),
        ("synchronized", {"synchronized": True}, 16),
    ):
        with strategy.scope():
            mirrored = frozenbn.convert(_model(keras, bn_kwargs))
        single = frozenbn.convert(_model(keras, bn_kwargs))
        count = frozenbn.recalibrate(mirrored, xr, batch_size=16, verbose=0)
        frozenbn.recalibrate(single, xr, batch_size=reference_batch, verbose=0)
        out["recalibrate"][key] = {
            "count": count,
            "layers": {
                name: {
                    "mean_replicas": replica_values(
                        mirrored.get_layer(name).moving_mean
                    ),
                    "var_replicas": replica_values(
                        mirrored.get_layer(name).moving_variance
                    ),
                    "mean_single": _values(single.get_layer(name).moving_mean),
                    "var_single": _values(
                        single.get_layer(name).moving_variance
                    ),
                }
                for name in _bn_names(single)
            },
        }
    # audit under the strategy: each replica measures its half of each
    # batch of 16, as one device measures batches of 8.
    with strategy.scope():
        mirrored = frozenbn.convert(_model(keras, {}), frozen=False)
    single = frozenbn.convert(_model(keras, {}), frozen=False)
    out["audit"] = {"mirrored": _audit(mirrored, (x, y), batch_size=16),
                    "single": _audit(single, (x, y), batch_size=8)}
    return out


def run_jax():
    import jax

    import keras

    import frozenbn

    devices = jax.devices("cpu")
    x, y = _data()

    def shards(variable):
        value = variable.value
        return {
            "devices": sorted(str(s.device) for s in value.addressable_shards),
            "replicated": bool(value.sharding.is_fully_replicated),
            "values": [
                np.asarray(s.data).tolist() for s in value.addressable_shards
            ],
        }

    # recalibrate under the distribution vs on one device (built first,
    # outside the distribution's scope).
    xr = np.random.default_rng(2).normal(-1.0, 3.0, (40, 6, 6, 2))
    xr = xr.astype("float32")
    single = frozenbn.convert(_model(keras, {}))
    frozenbn.recalibrate(single, xr, batch_size=16, verbose=0)
    distribution = keras.distribution.DataParallel(devices=devices)
    with distribution.scope():
        spread = frozenbn.convert(_model(keras, {}))
        recalibrated = frozenbn.recalibrate(
            spread, xr, batch_size=16, verbose=0
        )
    recalibrate = {
        name: {
            "mean_shards": shards(spread.get_layer(name).moving_mean),
            "var_shards": shards(spread.get_layer(name).moving_variance),
            "mean_single": np.asarray(
                single.get_layer(name).moving_mean.value
            ).tolist(),
            "var_single": np.asarray(
                single.get_layer(name).moving_variance.value
            ).tolist(),
        }
        for name in _bn_names(single)
    }

    keras.distribution.set_distribution(distribution)
    model = frozenbn.convert(_model(keras, {}))
    model.compile(keras.optimizers.SGD(0.003), "mse")
    bns = [model.get_layer(n) for n in _bn_names(model)]

    def snapshot(b):
        return {
            "mean": np.asarray(b.moving_mean.value).tolist(),
            "var": np.asarray(b.moving_variance.value).tolist(),
            "gamma": np.asarray(b.gamma.value).tolist(),
            "beta": np.asarray(b.beta.value).tolist(),
        }

    before = {b.name: snapshot(b) for b in bns}
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    after = {
        b.name: {
            **snapshot(b),
            "frozen": b.frozen,
            "mean_shards": shards(b.moving_mean),
            "var_shards": shards(b.moving_variance),
            "gamma_shards": shards(b.gamma),
        }
        for b in bns
    }
    return {
        "devices": [str(d) for d in devices],
        "loss": history.history["loss"],
        "before": before,
        "after": after,
        "recalibrated": recalibrated,
        "recalibrate": recalibrate,
    }


# Shards of unequal size (40 and 24 images): pooling weighs by counts.
SHARDS = ((0, 40), (40, 64))


def run_tensorflow_worker(index):
    """One worker of a 2-worker MultiWorkerMirroredStrategy (TF_CONFIG set
    by the caller): recalibrates on its own shard; worker 0 also computes
    the single-process statistics of the union of the shards."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    import frozenbn

    xr = _calibration_data(64)
    start, stop = SHARDS[index]
    with strategy.scope():
        model = frozenbn.convert(_model(keras, {}))
    count = frozenbn.recalibrate(model, xr[start:stop], batch_size=8, verbose=0)
    out = {
        "workers": strategy.num_replicas_in_sync,
        "count": count,
        "statistics": _statistics(model),
    }
    if index == 0:
        # The same batches of 8, all in one process and on one device.
        single = frozenbn.convert(_model(keras, {}))
        frozenbn.recalibrate(single, xr, batch_size=8, verbose=0)
        out["single"] = _statistics(single)
    return out


def run_jax_process(index, port):
    """One of 2 JAX processes (one CPU device each) under DataParallel:
    each recalibrates on its shard, whose batches are its halves of the
    global batches; process 0 also computes the single-process result."""
    import keras

    keras.distribution.initialize(
        f"localhost:{port}", num_processes=2, process_id=index
    )
    import jax

    import frozenbn

    xr = _calibration_data(64)
    shard = xr[index * 32 : (index + 1) * 32]
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    with distribution.scope():
        model = frozenbn.convert(_model(keras, {}))
        count = frozenbn.recalibrate(model, shard, batch_size=8, verbose=0)
        # audit pools its statistics over both processes too; its losses
        # are this process's.
        audited = frozenbn.convert(_model(keras, {}), frozen=False)
        x, y = _data()
        halves = slice(index * 16, (index + 1) * 16)
        audit = _audit(audited, (x[halves], y[halves]), batch_size=8)
    value = model.get_layer("bn_conv").moving_mean.value
    out = {
        "devices": len(jax.devices()),
        "count": count,
        "audit": audit,
        "replicated": bool(value.sharding.is_fully_replicated),
        "statistics": {
            name: {
                key: np.asarray(
                    getattr(model.get_layer(name), variable)
                    .value.addressable_data(0)
                ).tolist()
                for key, variable in (
                    ("mean", "moving_mean"),
                    ("var", "moving_variance"),
                )
            }
            for name in _bn_names(model)
        },
    }
    if index == 0:
        # Global batch b is process 0's batch b followed by process 1's.
        single = frozenbn.convert(_model(keras, {}))
        batches = [
            np.concatenate([xr[b : b + 8], xr[32 + b : 32 + b + 8]])
            for b in range(0, 32, 8)
        ]
        frozenbn.recalibrate(single, iter(batches), verbose=0)
        out["single"] = _statistics(single)
        single = frozenbn.convert(_model(keras, {}), frozen=False)
        out["audit_single"] = _audit(single, iter(
            (np.concatenate([x[b:b + 8], x[16 + b:16 + b + 8]]),
             np.concatenate([y[b:b + 8], y[16 + b:16 + b + 8]]))
            for b in (0, 8)))
    return out


class _Warnings(logging.Handler):
    """Collects frozenbn's warnings (an eager fallback would be one)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    warnings = _Warnings()
    logging.getLogger("frozenbn").addHandler(warnings)
    scenario = sys.argv[1]
    if scenario == "tensorflow-worker":
        result = run_tensorflow_worker(int(sys.argv[2]))
    elif scenario == "jax-process":
        result = run_jax_process(int(sys.argv[2]), sys.argv[3])
    else:
        result = {"tensorflow": run_tensorflow, "jax": run_jax}[scenario]()
    result["warnings"] = warnings.messages
    print("RESULT " + json.dumps(result))
