"""How `speed.py` times things: interleaved arms, medians, paired ratios.

Arms are measured side by side: after a warm-up (tracing and compilation),
every repeat runs each arm once, in an order rotated from one repeat to the
next, so that drifting machine load hits all arms alike. That compilation
stayed outside the timed region is checked, not assumed: on JAX every trace
and backend compile during the timed repeats is counted per arm (JAX's
monitoring events), and on every backend each arm's first timed sample is
compared with its median (`warmup_check`). Each sample records
the wall time and the process's CPU time (all threads); on a shared machine
the CPU time is the less disturbed of the two. Ratios are of medians, or
"paired": the median over repeats of the ratio of two arms within the same
repeat (they ran back to back), the most load-robust comparison.
"""

import gc
import time

import keras
import numpy as np

import frozenbn


def stats(samples) -> dict:
    a = np.asarray(samples, dtype="float64")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(a.min()),
        "max": float(a.max()),
        "samples": [float(v) for v in a],
    }


class _Compiles:
    """Counts JAX traces and backend compiles, per arm being run."""

    _EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
               "/jax/core/compile/backend_compile_duration")
    counts = None  # {arm: {event: n}} while counting; None off JAX
    arm = None
    _registered = False

    @classmethod
    def start(cls, names) -> None:
        if keras.config.backend() != "jax":
            cls.counts = None
            return
        if not cls._registered:
            from jax import monitoring

            monitoring.register_event_duration_secs_listener(cls._listen)
            cls._registered = True
        cls.counts = {name: {"traces": 0, "compiles": 0} for name in names}

    @classmethod
    def _listen(cls, event, _seconds, **_kwargs) -> None:
        if cls.counts is not None and cls.arm in cls.counts and (
            event in cls._EVENTS
        ):
            key = "traces" if "trace" in event else "compiles"
            cls.counts[cls.arm][key] += 1

    @classmethod
    def stop(cls):
        counts, cls.counts, cls.arm = cls.counts, None, None
        return counts


def interleaved(fns: dict, repeats: int, items: int) -> dict:
    """Runs each fn once per repeat, rotating the order.

    Returns per arm the stats of items/s (wall clock) plus `cpu_samples`,
    the CPU seconds of each sample, and `timed_compiles`: on JAX, the traces
    and backend compiles that happened while the arm was timed (else None).
    """
    names = list(fns)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    _Compiles.start(names)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            _Compiles.arm = name
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(items / (time.perf_counter() - start))
    compiles = _Compiles.stop()
    return {
        name: dict(stats(wall[name]), cpu_samples=cpu[name],
                   timed_compiles=compiles[name] if compiles else None)
        for name in names
    }


def warmup_check(arms: dict, warmup: dict) -> dict:
    """Evidence that compilation stayed out of the timed samples, per arm.

    `warmup_s`: seconds of each warm-up sample; `timed_compiles`: JAX's
    count of traces and compiles while timed (0 and 0, or None off JAX);
    `first_vs_median`: the first timed sample's rate over the median (a
    compile in it would put this far below 1).
    """
    return {
        name: {
            "warmup_s": warmup.get(name),
            "timed_compiles": arm.get("timed_compiles"),
            "first_vs_median": arm["samples"][0] / arm["median"],
        }
        for name, arm in arms.items()
    }


def ratios(arms: dict, base: str, key: str = "median") -> dict:
    """Ratio of `key` (median, max...) of each arm against `base`."""
    if base not in arms:
        return {}
    return {name: arms[name][key] / arms[base][key] for name in arms}


def paired_ratios(arms: dict, base: str, samples: str = "samples") -> dict:
    """Median over repeats of (arm / base) within the same repeat.

    With `samples="cpu_samples"` (seconds, lower is better) the ratio is
    base / arm, so that above 1 means faster in both cases.
    """
    if base not in arms:
        return {}
    ref = np.asarray(arms[base][samples])
    out = {}
    for name, arm in arms.items():
        values = np.asarray(arm[samples])
        ratio = ref / values if samples == "cpu_samples" else values / ref
        out[name] = float(np.median(ratio))
    return out


def warm_up(fns: dict, warmup: int) -> dict:
    """Runs each fn `warmup` times; returns the seconds of each run."""
    seconds = {}
    for name, fn in fns.items():
        seconds[name] = []
        for _ in range(warmup):
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
        print(f"  warm-up {name}: "
              + " + ".join(f"{s:.1f}s" for s in seconds[name]), flush=True)
    return seconds


def time_train(models: dict, x, y, args) -> dict:
    """images/s of `train_on_batch` (the `fit()` train function) per arm."""

    def steps(model):
        def run():
            for _ in range(args.steps):
                model.train_on_batch(x, y)

        return run

    fns = {name: steps(model) for name, model in models.items()}
    warmup = warm_up(fns, args.warmup)
    timed = interleaved(fns, args.repeats, args.steps * args.batch_size)
    return timed, warmup_check(timed, warmup)


def time_inference(models: dict, x, args) -> dict:
    """images/s of `predict_on_batch` per arm."""

    def steps(model):
        def run():
            for _ in range(args.steps):
                model.predict_on_batch(x)

        return run

    fns = {name: steps(model) for name, model in models.items()}
    warmup = warm_up(fns, args.warmup)
    timed = interleaved(fns, args.repeats, args.steps * args.batch_size)
    return timed, warmup_check(timed, warmup)


def time_convert(model: keras.Model, repeats: int) -> dict:
    """Seconds per call (lower is better), interleaved like the others."""
    weights = model.get_weights()

    def clone_set():
        keras.models.clone_model(model).set_weights(weights)

    fns = {
        "convert": lambda: frozenbn.convert(model),
        "clone_model": lambda: keras.models.clone_model(model),
        "clone_model_set_weights": clone_set,
    }
    for fn in fns.values():  # warm-up: first-call imports and caches
        fn()
    samples = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return {name: stats(s) for name, s in samples.items()}
