"""What `speed.py` writes: the targets check, the markdown, the plot."""

import numpy as np

from frozenbn._report import fmt
from frozenbn._report import format_table
from frozenbn.demo.machine import environment_line

# Targets from DESIGN.md ("Benchmarks and targets / Speed") and issue 15:
# name -> (minimum, where it comes from). Each value is a paired ratio
# (above 1 is faster, or for memory: smaller); convert is clone_model time
# over convert time.
TARGETS = {
    "train_frozenbn_vs_stock": (1.2, "frozen step >= 1.2x stock"),
    "train_frozenbn_vs_keras_trainable_false": (
        1.0,
        "frozen step >= 1.0x Keras trainable=False",
    ),
    "train_fused_vs_stock": (1.22, "fused step >= 1.22x stock"),
    "train_fused_vs_keras_trainable_false": (
        1.0,
        "fused step >= 1.0x Keras trainable=False",
    ),
    "train_fused_vs_folded_floor": (
        0.95,
        "fused step within a few percent of the folded network's",
    ),
    "infer_folded_vs_stock": (1.1, "folded inference >= 1.1x unfolded"),
    "convert_speed_vs_clone_model": (1.0, "convert no slower than clone"),
    "memory_frozenbn_over_fused": (
        1.0,
        "fused step's peak memory lower than unfused (ratio > 1)",
    ),
}

STRICT = {"memory_frozenbn_over_fused"}
"""Targets met only above their threshold (a ratio of 1 is no gain)."""


def comparator(name: str) -> str:
    """How a target's value must compare with its threshold."""
    return ">" if name in STRICT else ">="


def targets(result: dict) -> dict:
    """Each target's value, threshold and whether it is met."""
    train = result.get("train", {})
    vs_stock = train.get("paired_ratios_vs_stock", {})
    vs_keras = train.get("paired_ratios_vs_keras_trainable_false", {})
    vs_floor = train.get("paired_ratios_vs_folded", {})
    values = {
        "train_frozenbn_vs_stock": vs_stock.get("frozenbn"),
        "train_frozenbn_vs_keras_trainable_false": vs_keras.get("frozenbn"),
        "train_fused_vs_stock": vs_stock.get("fused"),
        "train_fused_vs_keras_trainable_false": vs_keras.get("fused"),
        "train_fused_vs_folded_floor": vs_floor.get("fused"),
        "infer_folded_vs_stock": result.get("inference", {})
        .get("paired_ratios_vs_stock", {})
        .get("folded"),
        "convert_speed_vs_clone_model": result.get("convert", {})
        .get("paired_speed_vs_clone_model", {})
        .get("convert"),
        "memory_frozenbn_over_fused": _memory_ratio(result, "frozenbn", "fused"),
    }
    out = {}
    for name, (target, source) in TARGETS.items():
        value = values[name]
        met = None
        if value is not None:
            met = value > target if name in STRICT else value >= target
        out[name] = {"value": value, "target": target, "source": source,
                     "met": met}
    return out


def peak_mb(arm: dict):
    """An arm's step peak: device memory on a GPU, else the peak RSS."""
    if arm.get("device_peak_mb") is not None:
        return arm["device_peak_mb"]
    return arm.get("step_peak_rss_mb") or arm.get("process_peak_rss_mb")


def _memory_ratio(result, arm, base):
    arms = result.get("memory", {}).get("arms", {})
    if arm not in arms or base not in arms:
        return None
    return peak_mb(arms[arm]) / peak_mb(arms[base])


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _timing_rows(arms: dict, columns: dict, digits: int = 1) -> list:
    rows = []
    for name, s in arms.items():
        rows.append(
            [
                name,
                f"{s['median']:.{digits}f}",
                f"{s['q1']:.{digits}f}-{s['q3']:.{digits}f}",
                f"{s['min']:.{digits}f}-{s['max']:.{digits}f}",
            ]
            + [_x(ratios.get(name)) for ratios in columns.values()]
        )
    return rows


def _timing_section(
    title: str, arms: dict, columns: dict, digits: int = 1, note: str = ""
) -> list:
    """Markdown lines of one timing table: a heading, a note, the table."""
    lines = ["", f"## {title}", ""]
    if note:
        lines += [note, ""]
    return lines + [
        format_table(
            ["arm", "median", "IQR", "min-max"] + list(columns),
            _timing_rows(arms, columns, digits),
            markdown=True,
        )
    ]


def markdown(result: dict) -> str:
    c, env = result["config"], result["machine"]
    lines = [
        f"# Speed: {env['backend']} on {env['device']}",
        "",
        f"Date {result['date']}. Command: `{result['command']}`. Model "
        f"{c['model']} {c['image_size']}x{c['image_size']}, batch "
        f"{c['batch_size']}, {c['steps']} steps x {c['repeats']} repeats "
        f"(warm-up {c['warmup']}), optimizer {c['optimizer']}, "
        f"jit_compile={c['jit_compile']}.",
        "",
        environment_line(env)
        + f" Load average at the end: {fmt(result.get('load_average_end'))}.",
    ]
    if not result.get("complete", True):
        lines += ["", "**Partial: the run stopped before its last section; "
                  "what is below is what it measured.**"]
    train = result.get("train")
    if train:
        columns = {
            "vs stock": train["ratios_vs_stock"],
            "paired vs stock": train["paired_ratios_vs_stock"],
            "paired vs stock (CPU time)": train["paired_cpu_ratios_vs_stock"],
            "paired vs keras_trainable_false": train[
                "paired_ratios_vs_keras_trainable_false"
            ],
            "paired vs folded": train["paired_ratios_vs_folded"],
        }
        lines += _timing_section(
            "Training step (images/s, higher is better)",
            train["arms"],
            columns,
            note="Ratios: of medians; paired = median over repeats of the "
            "ratio within a repeat (wall clock, or the process's CPU time).",
        )
    inference = result.get("inference")
    if inference:
        columns = {
            "vs stock": inference["ratios_vs_stock"],
            "paired vs stock": inference["paired_ratios_vs_stock"],
        }
        lines += _timing_section(
            "Inference (images/s, higher is better)", inference["arms"], columns
        )
    convert = result.get("convert")
    if convert:
        columns = {
            "paired speed vs clone_model": convert[
                "paired_speed_vs_clone_model"
            ],
        }
        lines += _timing_section(
            "convert vs clone_model (seconds per call, lower is better)",
            convert["arms"],
            columns,
            digits=3,
        )
    lines += _memory_lines(result.get("memory"))
    lines += _exactness_lines(result)
    if result.get("targets"):
        rows = [
            [name, fmt(t["value"]), f"{comparator(name)} {t['target']}",
             t["source"],
             "n/a" if t["met"] is None else ("yes" if t["met"] else "no")]
            for name, t in result["targets"].items()
        ]
        lines += [
            "",
            "## Targets",
            "",
            format_table(
                ["ratio", "value", "target", "what", "met"], rows, markdown=True
            ),
        ]
    lines += _peer_lines(result.get("torchvision_peer"))
    return "\n".join(lines) + "\n"


def _memory_lines(memory) -> list:
    if not memory:
        return []
    rows = [
        [name, fmt(a["rss_before_mb"]), fmt(a["step_peak_rss_mb"]),
         fmt(a["process_peak_rss_mb"]), fmt(a["device_peak_mb"])]
        for name, a in memory["arms"].items()
    ]
    return [
        "",
        "## Peak memory of a training step (MB, one fresh process per arm)",
        "",
        memory["note"].replace("\n", " "),
        "",
        format_table(
            ["arm", "RSS before the steps", "peak RSS during the steps",
             "process peak RSS", "device peak"],
            rows,
            markdown=True,
        ),
    ]


def _exactness_lines(result) -> list:
    ex = result.get("exactness")
    if not ex:
        return []
    lines = [
        "",
        "## Exactness",
        "",
        "frozenbn called with training=True (the path fit() takes) vs Keras "
        "BN training=False; rel = max abs diff / max abs reference output.",
        "",
        f"- model output: max abs diff {fmt(ex['model_max_abs_diff'])} "
        f"(max |output| {fmt(ex['model_output_max_abs'])}, rel "
        f"{fmt(ex['model_max_rel_diff'])})",
        f"- per BN layer: max abs diff {fmt(ex['per_layer_max_abs_diff'])} "
        f"(max rel {fmt(ex['per_layer_max_rel_diff'])}); "
        f"{ex['per_layer_bit_exact']}/{ex['num_bn_layers']} layers bit-exact",
        f"- inference mode: model max abs diff "
        f"{fmt(ex['model_inference_max_abs_diff'])}, per layer "
        f"{fmt(ex['per_layer_inference_max_abs_diff'])}",
    ]
    fused = result.get("fused_exactness")
    if fused:
        lines.append(
            f"- `fuse` ({fused['fused']} pairs fused, {fused['left']} left) "
            f"vs frozenbn, training mode: max abs diff "
            f"{fmt(fused['max_abs_diff'])} (rel {fmt(fused['max_rel_diff'])})"
        )
    folded = result.get("fold_exactness")
    if folded:
        lines.append(
            f"- `fold` vs stock inference: max abs diff "
            f"{fmt(folded['max_abs_diff'])} (rel "
            f"{fmt(folded['max_rel_diff'])})"
        )
    return lines


def _peer_lines(peer) -> list:
    if not peer:
        return []
    if "arms" not in peer:
        return ["", f"torchvision peer: {peer.get('skipped')}"]
    memory = peer.get("device_peak_mb", {})
    rows = [
        [name, f"{s['median']:.1f}", f"{s['q1']:.1f}-{s['q3']:.1f}",
         _x(peer["ratios_vs_torchvision_bn"].get(name)),
         fmt(memory.get(name))]
        for name, s in peer["arms"].items()
    ]
    return [
        "",
        f"## torchvision peer ({peer['device']}, torchvision "
        f"{peer['torchvision']}; images/s)",
        "",
        peer["note"],
        "",
        format_table(
            ["arm", "median", "IQR", "vs torchvision_bn",
             "device peak MB (first call)"], rows, markdown=True
        ),
    ]


def plot(result: dict, path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = []
    for key, title in (
        ("train", "Training step (images/s)"),
        ("inference", "Inference (images/s)"),
        ("convert", "convert vs clone (s, lower is better)"),
        ("torchvision_peer", "torchvision peer (images/s)"),
    ):
        if result.get(key, {}).get("arms"):
            panels.append((title, result[key]["arms"], True))
    memory = result.get("memory", {}).get("arms")
    if memory:
        values = {name: peak_mb(arm) for name, arm in memory.items()}
        panels.append(("Step peak memory (MB)", values, False))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.4))
    for ax, (title, arms, with_iqr) in zip(np.atleast_1d(axes), panels):
        names = list(arms)
        if with_iqr:
            heights = [arms[n]["median"] for n in names]
            err = [
                [arms[n]["median"] - arms[n]["q1"] for n in names],
                [arms[n]["q3"] - arms[n]["median"] for n in names],
            ]
        else:
            heights, err = [arms[n] for n in names], None
        ax.bar(range(len(names)), heights, yerr=err, capsize=4,
               color=["#888888"] + ["#3b7dd8"] * (len(names) - 1))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    env, c = result["machine"], result["config"]
    fig.suptitle(
        f"frozenbn speed: {env['backend']}, {env['device']}, {c['model']} "
        f"{c['image_size']}px batch {c['batch_size']} (bars: median, "
        "whiskers: IQR)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
