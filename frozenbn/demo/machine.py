"""The machine a result was measured on, for the demo's and the
benchmarks' results files, so every file names its machine the same way.

- `environment_info()`: the device, backend and library versions, a dict.
- `environment_line(env)`: the same as one sentence.
"""

import os
import platform
import sys
from typing import Optional

import keras
import numpy as np


def environment_info() -> dict:
    """The machine, backend and versions, for results files.

    Returns:
        A dict with `device` (GPU name or CPU model), `device_kind`
        (`"gpu"` or `"cpu"`), `accelerator` (or `None`), `cpu`,
        `cpu_count`, `load_average` (1-minute, when known: other work slows
        timings), `backend`, `devices` (what the backend lists),
        `platform` and the versions of Python, Keras, NumPy, the backend
        library and frozenbn.
    """
    import frozenbn

    backend = keras.config.backend()
    accelerator = _accelerator(backend)
    cpu = _cpu_model()
    return {
        "device": accelerator or cpu,
        "device_kind": "gpu" if accelerator else "cpu",
        "accelerator": accelerator,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
        "backend": backend,
        "devices": _devices(backend),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "keras": keras.__version__,
        "numpy": np.__version__,
        "backend_version": _backend_version(backend),
        "frozenbn": frozenbn.__version__,
    }


def environment_line(env: dict) -> str:
    """One sentence naming the machine, its load, backend and versions."""
    if env.get("accelerator"):
        machine = f"GPU {env['accelerator']}, CPU {env['cpu']}"
    else:
        machine = f"CPU {env['cpu']}"
    load = env.get("load_average")
    load = f", load average {load:.1f}" if load is not None else ""
    return (
        f"Machine: {machine} ({env['cpu_count']} cores{load}); backend "
        f"{env['backend']} {env['backend_version']}, Keras {env['keras']}, "
        f"NumPy {env['numpy']}, Python {env['python']}, frozenbn "
        f"{env['frozenbn']}."
    )


def _load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _backend_version(backend: str) -> Optional[str]:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        backend
    )
    if module is None:
        return None
    return getattr(__import__(module), "__version__", None)


def _devices(backend: str) -> list:
    """What the backend lists as devices (informative only)."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return [d.name for d in tf.config.list_physical_devices()]
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices()]
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return [
                    torch.cuda.get_device_name(i)
                    for i in range(torch.cuda.device_count())
                ]
            return ["cpu"]
    except Exception:  # Device queries are informative only.
        return []
    return []


def _accelerator(backend: str) -> Optional[str]:
    """The name of the first GPU the backend sees, or `None`."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return details.get("device_name", gpus[0].name)
        elif backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform != "cpu":
                return device.device_kind
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # Device queries are informative only.
        return None
    return None
