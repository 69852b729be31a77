"""Peak memory of a training step, one fresh process per arm.

`tracemalloc` does not see what the backends allocate, so each arm runs in
its own subprocess (`python speed_memory.py --arm NAME ...`): it builds the
base network and the arm's copy, drops the base, compiles, runs warm-up
steps (tracing, compilation, optimizer state), and then times nothing but
records memory around `--steps` more `train_on_batch` calls:

- `rss_before_mb`: resident memory before the measured steps (weights,
  optimizer state, compiled functions, allocator caches);
- `step_peak_rss_mb`: the peak resident memory during the measured steps
  (Linux: the kernel's high-water mark, reset through
  `/proc/self/clear_refs` just before them);
- `process_peak_rss_mb`: the high-water mark of the whole process
  (building and copying the models included);
- `device_peak_mb`: on a GPU, the backend's own peak of allocated device
  memory during the steps (torch `max_memory_allocated`, TensorFlow
  `get_memory_info`, JAX `peak_bytes_in_use`, the last since start).

What a step keeps for its backward pass (activations, BN inputs) shows in
`step_peak_rss_mb - rss_before_mb` on a CPU and in `device_peak_mb` on a
GPU. Allocators keep freed memory, so RSS is an upper bound of what the
step needs; arms are comparable because they run the same way.
"""

import gc
import json
import os
import re
import subprocess
import sys

import _common  # noqa: F401  (puts the checkout first on sys.path)

NOTE = (
    "Each arm in a fresh process: build, copy, compile, 2 warm-up steps, then "
    "the peak resident memory (RSS) during the measured steps (the kernel's "
    "high-water mark, reset before them), and on a GPU the backend's peak of "
    "allocated device memory. Allocators keep what the warm-up steps freed, "
    "so the CPU figures include the weights, optimizer state and runtime "
    "(about the same in every arm) plus what a step holds at its peak."
)
_MARK = "SPEED_MEMORY "
_STATUS = "/proc/self/status"


def measure(arms, args) -> dict:
    """Runs each arm in a fresh subprocess, all at once; returns their peaks.

    Each process reads its own peaks (the kernel's and the backend's are
    per process), so arms run side by side measure what they would alone.
    """
    procs = {}
    for arm in arms:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--arm", arm,
            "--model", args.model,
            "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size),
            "--optimizer", args.optimizer,
            "--steps", str(max(args.steps, 2)),
        ]
        procs[arm] = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for arm, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=1800)
        lines = [
            line[len(_MARK):]
            for line in stdout.splitlines()
            if line.startswith(_MARK)
        ]
        if proc.returncode != 0 or not lines:
            tail = (stdout + stderr)[-2000:]
            raise RuntimeError(f"memory run of arm {arm!r} failed:\n{tail}")
        results[arm] = json.loads(lines[-1])
        print(f"  memory {arm}: {results[arm]}", flush=True)
    return {"arms": results, "note": NOTE}


def _status_mb(key: str):
    try:
        with open(_STATUS, encoding="utf-8") as f:
            found = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _device_peak(backend: str, reset: bool):
    """The backend's peak of allocated GPU memory in MB, or None on a CPU."""
    try:
        if backend == "torch":
            import torch

            if not torch.cuda.is_available():
                return None
            if reset:
                torch.cuda.reset_peak_memory_stats()
            return torch.cuda.max_memory_allocated() / 2**20
        if backend == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                return None
            if reset:
                tf.config.experimental.reset_memory_stats("GPU:0")
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats()
            if not stats or "peak_bytes_in_use" not in stats:
                return None
            return stats["peak_bytes_in_use"] / 2**20
    except (ImportError, RuntimeError, ValueError):
        return None
    return None


def _child(argv=None) -> dict:
    p = _common.argument_parser("one arm's training-step memory")
    p.add_argument("--arm", required=True)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)

    import keras

    import speed_arms

    keras.utils.set_random_seed(0)
    backend = keras.config.backend()
    x, y = speed_arms.data(args.batch_size, args.image_size)
    base = speed_arms.build_base(args.model, args.image_size, x)
    model = speed_arms.TRAIN_ARMS[args.arm](base)
    del base
    gc.collect()
    speed_arms.compile_model(model, args.optimizer)
    for _ in range(2):
        model.train_on_batch(x, y)
    gc.collect()
    before = _status_mb("VmRSS")
    setup_peak = _status_mb("VmHWM")
    reset = _reset_peak()
    _device_peak(backend, reset=True)
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    peak = _status_mb("VmHWM")
    return {
        "rss_before_mb": before,
        "step_peak_rss_mb": peak if reset else None,
        "process_peak_rss_mb": max(peak, setup_peak) if reset else peak,
        "device_peak_mb": _device_peak(backend, reset=False),
        "steps": args.steps,
    }


if __name__ == "__main__":
    print(_MARK + json.dumps(_child()), flush=True)
