"""What XLA compiles a training step to, per arm (JAX only).

Timing says whether two arms run at the same speed; this says whether they
run the same work. For each arm's model, already compiled and stepped by
`speed.py`, the step Keras jits for `fit()` (`model.train_step` on the
model's state, `donate_argnums=0`, as the JAX trainer does) is lowered and
compiled again for the same batch, and the optimized HLO module is read:

- `flops`, `bytes_accessed`: XLA's cost analysis of the whole step;
- `entry_ops`: instructions of the entry computation by opcode. After
  XLA's fusion passes, each `fusion` and `custom-call` there is one kernel
  launch (on a GPU: cuDNN convolutions and cuBLAS matmuls are custom
  calls), so `kernels` (their sum) counts the launches of one step;
- `custom_calls`: the custom-call targets by name.

Two arms with equal counts and equal cost analysis run the same kernels;
a difference in `reduce`-bearing fusions is the gamma/beta gradients.
"""

import collections
import re

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9\-]*)\(")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def entry_ops(hlo_text: str) -> dict:
    """Opcode counts and custom-call targets of an HLO module's entry.

    Example:
        >>> hlo = '''ENTRY %main (p: f32[2]) -> f32[2] {
        ...   %p = f32[2]{0} parameter(0)
        ...   %f = f32[2]{0} fusion(%p), kind=kLoop, calls=%fc
        ...   ROOT %c = f32[2]{0} custom-call(%f), custom_call_target="gemm"
        ... }'''
        >>> ops = entry_ops(hlo)
        >>> ops["ops"]["fusion"], ops["kernels"], ops["custom_calls"]
        (1, 2, {'gemm': 1})
    """
    ops = collections.Counter()
    targets = collections.Counter()
    in_entry = False
    for line in hlo_text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
            continue
        if in_entry and line.startswith("}"):
            break
        match = _INSTRUCTION.match(line) if in_entry else None
        if not match:
            continue
        opcode = _OPCODE.search(" " + match.group(1))
        if opcode:
            ops[opcode.group(1)] += 1
            if opcode.group(1) == "custom-call":
                target = _TARGET.search(line)
                targets[target.group(1) if target else "?"] += 1
    return {
        "ops": dict(sorted(ops.items())),
        "kernels": ops["fusion"] + ops["custom-call"],
        "custom_calls": dict(sorted(targets.items())),
    }


def step_profile(model, x, y) -> dict:
    """Cost analysis and entry op counts of `model`'s compiled train step."""
    import jax

    state = model._get_jax_state(
        trainable_variables=True,
        non_trainable_variables=True,
        optimizer_variables=True,
        metrics_variables=True,
        purge_model_variables=False,
    )
    compiled = (
        jax.jit(model.train_step, donate_argnums=0)
        .lower(state, (x, y, None))
        .compile()
    )
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per device
        cost = cost[0]
    profile = entry_ops(compiled.as_text())
    profile["flops"] = float(cost.get("flops", float("nan")))
    profile["bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
    return profile


def profiles(models: dict, x, y) -> dict:
    """`step_profile` of each arm, printed as it goes."""
    out = {}
    for name, model in models.items():
        out[name] = step_profile(model, x, y)
        p = out[name]
        print(f"  compiled {name}: {p['kernels']} kernels, "
              f"{p['flops'] / 1e9:.2f} GFLOP, "
              f"{p['bytes_accessed'] / 2**20:.0f} MiB accessed", flush=True)
    return out
