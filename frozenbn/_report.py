"""Results that people read: machine description, tables, JSON.

Shared by `audit`, the command line, the demo and the benchmarks, so a
result file names its machine the same way everywhere.

- `environment_info()` / `environment_line(env)`: the device, backend and
  library versions, as a dict and as one sentence.
- `format_table(header, rows, markdown=False)`: aligned text or markdown.
- `write_json(payload, path)`: indented JSON with NaN/inf as `null`.
- `finite(obj)` and `fmt(value)`: the helpers behind them.
"""

import json
import math
import os
import platform
import sys
from typing import Any
from typing import Optional
from typing import Sequence

import keras
import numpy as np


def fmt(value: Optional[float], digits: int = 4) -> str:
    """A number with `digits` significant digits, or `"n/a"` for `None`.

    Example:

    >>> fmt(3.14159), fmt(None)
    ('3.142', 'n/a')
    """
    return "n/a" if value is None else f"{value:.{digits}g}"


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf) replaced by `None`.

    Recurses into dicts, lists and tuples (tuples become lists), so the
    result is valid JSON.

    Example:

    >>> finite({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, None]}
    """
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(value) for value in obj]
    return obj


def write_json(payload: dict, path: str) -> str:
    """Writes `payload` as indented JSON (NaN/inf become `null`).

    Creates the folder of `path` if needed and returns `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(finite(payload), f, indent=2, sort_keys=False)
        f.write("\n")
    return path


def format_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False
) -> str:
    """A table of strings, as aligned plain text or as markdown.

    Example:

    >>> print(format_table(["arm", "ratio"], [["stock", "91"]]))
    arm    ratio
    -----  -----
    stock  91
    """
    header = [str(cell) for cell in header]
    rows = [[str(cell) for cell in row] for row in rows]
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(row[i]) for row in [header] + rows) for i in range(len(header))
    ]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header] + rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


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
    from frozenbn import __version__

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
        "frozenbn": __version__,
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
