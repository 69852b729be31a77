"""Results that people read: tables and JSON.

Shared by `audit`, the command line, the demo and the benchmarks.

- `format_table(header, rows, markdown=False)`: aligned text or markdown.
- `write_json(payload, path)`: indented JSON with NaN/inf as `null`.
- `finite(obj)` and `fmt(value)`: the helpers behind them.
"""

import json
import math
import os
from typing import Any
from typing import Optional
from typing import Sequence

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
