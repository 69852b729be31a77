"""Speed benchmark: what frozen BatchNormalization costs and saves.

Measures, on the backend named by `KERAS_BACKEND`, with ResNet50
(`weights=None`, batch-norm statistics calibrated on one batch so the network
is numerically sane) as the fine-tuned backbone:

- training-step throughput (images/s) of four arms that differ only in their
  BatchNormalization layers:
  `stock` (Keras BN, batch statistics), `keras_trainable_false` (Keras BN
  with `trainable=False` on the BN layers only: moving statistics, gamma/beta
  frozen), `naive_frozen` (Keras BN always called with `training=False`,
  gamma/beta trained: a benchmark-only subclass, the cost of the gamma/beta
  gradient path without any optimisation), `frozenbn` (`frozenbn.convert`)
  and `frozenbn_trainable_false` (frozenbn with gamma/beta frozen too: the
  same work as `keras_trainable_false`);
- inference throughput: stock model vs the frozenbn model vs `frozenbn.fold`;
- wall time of `frozenbn.convert` vs `keras.models.clone_model` alone and
  `clone_model` followed by `set_weights` (the honest comparison: `convert`
  copies the weights too);
- exactness of the frozenbn model against stock Keras `training=False`: the
  max abs difference of the whole model output and of every BN layer;
- optionally (`--torchvision-peer`, torch backend) torchvision's ResNet50
  with `torchvision.ops.misc.FrozenBatchNorm2d` on the same device.

How a step is timed: `model.train_on_batch(x, y)` on a model compiled with
Keras's defaults (`jit_compile="auto"`: a `tf.function` graph without XLA on a
CPU-only TensorFlow, XLA on a TensorFlow GPU, `jax.jit` on JAX, eager on
torch). `train_on_batch` runs the very `train_function` that `fit()` builds
(with `steps_per_execution=1`) and returns Python floats, so each step is
synchronised with the device; the inputs are converted to backend tensors
once, so no host-to-device copy is timed. Inference uses `predict_on_batch`
the same way.

Arms are measured side by side: after a warm-up (tracing and compilation),
every repeat runs each arm for `--steps` steps, in an order rotated from one
repeat to the next, so that drifting machine load hits all arms alike. The
report gives the median over repeats, the quartiles and min/max, and ratios
of medians against `stock`.

Writes `speed_<backend>_<device>.{json,md,png}` to `--out`.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/speed.py \
        --image-size 64 --batch-size 32 --steps 5 --repeats 15
    KERAS_BACKEND=jax python benchmarks/speed.py --tiny
"""

import argparse
import datetime
import gc
import os
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import keras  # noqa: E402

import frozenbn  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

NUM_CLASSES = 10

# Targets from DESIGN.md ("Benchmarks and targets / Speed"): ratio name,
# minimum value. Convert "no slower than clone_model" is a time ratio
# clone_model / convert >= 1.
TARGETS = {
    "train_frozenbn_vs_stock": 1.2,
    "train_frozenbn_vs_keras_trainable_false": 1.0,
    "infer_folded_vs_stock": 1.1,
    "convert_speed_vs_clone_model": 1.0,
}


class _NaiveFrozenBN(keras.layers.BatchNormalization):
    """Keras BN always called in inference mode; gamma/beta stay trainable.

    Benchmark-only reference for "what a frozen layer costs without any
    optimisation": the moving statistics are used and never updated, and
    gamma/beta get gradients through Keras's own inference-mode op.
    """

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


# --------------------------------------------------------------------------
# Models


def _build_backbone(model_name, image_size):
    shape = (image_size, image_size, 3)
    if model_name == "resnet50":
        return keras.applications.ResNet50(
            weights=None, include_top=False, pooling="avg", input_shape=shape
        )
    if model_name == "mini":
        # A few conv-BN-ReLU blocks: for smoke tests, seconds to build.
        inputs = keras.Input(shape)
        x = inputs
        for i, filters in enumerate((8, 16)):
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"c{i}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, x, name="mini")
    raise ValueError(f"Unknown model: {model_name!r}")


def _build_base(model_name, image_size, calib_x):
    """Backbone + linear head, BN statistics set from one calibration batch.

    With `weights=None` the moving statistics are 0/1 and the activations of a
    deep network in inference mode grow without bound; one pass in training
    mode with momentum 0 makes them those of a real batch, as a pretrained
    backbone's would be, and gamma/beta are perturbed so that exactness checks
    do not run on the identity.
    """
    backbone = _build_backbone(model_name, image_size)
    inputs = keras.Input((image_size, image_size, 3))
    outputs = keras.layers.Dense(NUM_CLASSES, name="head")(backbone(inputs))
    model = keras.Model(inputs, outputs, name=f"{model_name}_finetune")
    bns = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(calib_x, training=True)
    rng = np.random.default_rng(1)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
        bn.beta.assign(rng.normal(0.0, 0.1, n).astype("float32"))
    return model, bns


def _clone_with(model, clone_function):
    copy = keras.models.clone_model(
        model, clone_function=clone_function, recursive=True
    )
    copy.set_weights(model.get_weights())
    return copy


def _bn_trainable_false(model):
    copy = _clone_with(model, None)
    for layer in copy._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.BatchNormalization:
            layer.trainable = False
    return copy


def _frozenbn_trainable_false(model):
    # frozenbn with gamma/beta frozen too: the same work as Keras
    # trainable=False, so the two should run at the same speed.
    copy = frozenbn.convert(model)
    for layer in copy._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, frozenbn.BatchNormalization):
            layer.trainable = False
    return copy


def _naive_frozen(model):
    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return _NaiveFrozenBN.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return _clone_with(model, clone)


def _compile(model, optimizer):
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)
    else:
        opt = keras.optimizers.Adam(learning_rate=1e-5)
    # jit_compile is left at Keras's default ("auto") on purpose.
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _lazy_fold():
    fold = getattr(frozenbn, "fold", None)
    if fold is not None:
        return fold
    try:
        from frozenbn.fold import fold  # noqa: PLC0415
    except ImportError:
        return None
    return fold


# --------------------------------------------------------------------------
# Timing


def _stats(samples):
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


def _interleaved(fns, repeats, per_call_items):
    """Runs each fn once per repeat, rotating the order; returns items/s."""
    names = list(fns)
    samples = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(per_call_items / (time.perf_counter() - start))
    return {name: _stats(s) for name, s in samples.items()}


def _ratios(arms, base, key="median"):
    """Ratio of medians against `base`."""
    if base not in arms or arms[base] is None:
        return {}
    return {
        name: arms[name][key] / arms[base][key]
        for name in arms
        if arms[name] is not None
    }


def _paired_ratios(arms, base):
    """Median over repeats of (arm / base) within the same repeat.

    Both arms of a pair ran back to back, so slow drifts in machine load
    cancel out; this is the most load-robust ratio on a shared machine.
    """
    if base not in arms:
        return {}
    ref = np.asarray(arms[base]["samples"])
    return {
        name: float(np.median(np.asarray(a["samples"]) / ref))
        for name, a in arms.items()
    }


def bench_train(models, x, y, args):
    def steps(model):
        def run():
            for _ in range(args.steps):
                model.train_on_batch(x, y)

        return run

    fns = {name: steps(m) for name, m in models.items()}
    for name, fn in fns.items():
        t = time.perf_counter()
        for _ in range(args.warmup):
            fns[name]()
        print(f"  warm-up {name}: {time.perf_counter() - t:.1f}s", flush=True)
    return _interleaved(fns, args.repeats, args.steps * args.batch_size)


def bench_infer(models, x, args):
    def steps(model):
        def run():
            for _ in range(args.steps):
                model.predict_on_batch(x)

        return run

    fns = {name: steps(m) for name, m in models.items()}
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    return _interleaved(fns, args.repeats, args.steps * args.batch_size)


def bench_convert(model, repeats):
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
    return {name: _stats(s) for name, s in samples.items()}


# --------------------------------------------------------------------------
# Exactness


def bench_exactness(stock, frozen, x):
    """Max abs diff: frozenbn (training=True) vs stock Keras training=False."""
    ref = keras.ops.convert_to_numpy(stock(x, training=False))
    out = keras.ops.convert_to_numpy(frozen(x, training=True))
    out_inf = keras.ops.convert_to_numpy(frozen(x, training=False))
    model_diff = float(np.max(np.abs(ref - out)))
    model_rel = float(model_diff / max(np.max(np.abs(ref)), 1e-30))

    stock_bb, frozen_bb = _backbone(stock), _backbone(frozen)
    stock_bns, frozen_bns = _bn_layers(stock_bb), _bn_layers(frozen_bb)
    # Inputs of every BN layer in the stock model, one inference pass.
    sub = keras.Model(stock_bb.inputs, [bn.input for bn in stock_bns])
    inputs = sub(x, training=False)
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    per_layer, per_layer_rel, per_layer_inf = [], [], []
    for s_bn, f_bn, xin in zip(stock_bns, frozen_bns, inputs):
        a = keras.ops.convert_to_numpy(s_bn(xin, training=False))
        b = keras.ops.convert_to_numpy(f_bn(xin, training=True))
        c = keras.ops.convert_to_numpy(f_bn(xin, training=False))
        per_layer.append(float(np.max(np.abs(a - b))))
        per_layer_rel.append(per_layer[-1] / max(np.max(np.abs(a)), 1e-30))
        per_layer_inf.append(float(np.max(np.abs(a - c))))
    return {
        "note": "frozenbn called with training=True (the path fit() "
        "takes) and training=False, vs stock Keras BN training=False; "
        "rel = max abs diff / max abs stock output",
        "model_max_abs_diff": model_diff,
        "model_max_rel_diff": model_rel,
        "model_output_max_abs": float(np.max(np.abs(ref))),
        "model_inference_max_abs_diff": float(np.max(np.abs(ref - out_inf))),
        "per_layer_max_abs_diff": float(max(per_layer, default=0.0)),
        "per_layer_max_rel_diff": float(max(per_layer_rel, default=0.0)),
        "per_layer_bit_exact": int(sum(d == 0.0 for d in per_layer)),
        "per_layer_inference_max_abs_diff": float(
            max(per_layer_inf, default=0.0)
        ),
        "num_bn_layers": len(per_layer),
    }


def _bn_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def _backbone(model):
    # The BN layers live in the nested backbone model.
    return next(
        layer for layer in model.layers if isinstance(layer, keras.Model)
    )


# --------------------------------------------------------------------------
# torchvision peer


def bench_torchvision(args):
    try:
        import torch  # noqa: PLC0415
        import torchvision  # noqa: PLC0415
        from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: PLC0415
    except ImportError as e:
        print(f"torchvision peer skipped: {e}")
        return {"skipped": f"torchvision not importable: {e}"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(
        args.batch_size, 3, args.image_size, args.image_size, device=device
    )
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)

    def make(norm_layer):
        kwargs = {} if norm_layer is None else {"norm_layer": norm_layer}
        net = torchvision.models.resnet50(
            weights=None, num_classes=NUM_CLASSES, **kwargs
        ).to(device)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def run():
            for _ in range(args.steps):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(x), y)
                loss.backward()
                opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            loss.item()

        return run

    fns = {
        "torchvision_bn": make(None),
        "torchvision_frozen_bn2d": make(FrozenBatchNorm2d),
    }
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    arms = _interleaved(fns, args.repeats, args.steps * args.batch_size)
    return {
        "device": device,
        "torchvision": torchvision.__version__,
        "note": (
            "eager PyTorch, NCHW; FrozenBatchNorm2d keeps weight/bias as "
            "buffers (not trained), i.e. the peer of Keras trainable=False."
        ),
        "arms": arms,
        "ratios_vs_torchvision_bn": _ratios(arms, "torchvision_bn"),
    }


# --------------------------------------------------------------------------
# Machine and report


def machine_info():
    # The machine, backend and versions shared by every benchmark, plus the
    # names this report uses and the devices each backend lists.
    info = _common.environment()
    info["cpu_model"] = info["cpu"]
    info["gpus"] = [info["accelerator"]] if info["accelerator"] else []
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415

        info["tensorflow"] = tf.__version__
        info["devices"] = [d.name for d in tf.config.list_physical_devices()]
    elif backend == "jax":
        import jax  # noqa: PLC0415

        info["jax"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    elif backend == "torch":
        import torch  # noqa: PLC0415

        info["torch"] = torch.__version__
        info["devices"] = (
            [torch.cuda.get_device_name(0)] if torch.cuda.is_available()
            else ["cpu"]
        )
    return info


def _targets(result):
    """Target ratios, from paired ratios (the most load-robust; see above)."""
    train = result["train"]
    conv = result["convert"]["arms"]
    clone_over_convert = float(np.median(
        np.asarray(conv["clone_model"]["samples"])
        / np.asarray(conv["convert"]["samples"])
    ))
    values = {
        "train_frozenbn_vs_stock": train["paired_ratios_vs_stock"].get(
            "frozenbn"
        ),
        "train_frozenbn_vs_keras_trainable_false": train[
            "paired_ratios_vs_keras_trainable_false"
        ].get("frozenbn"),
        "infer_folded_vs_stock": result["inference"][
            "paired_ratios_vs_stock"
        ].get("folded"),
        "convert_speed_vs_clone_model": clone_over_convert,
    }
    return {
        name: {
            "value": values[name],
            "target": target,
            "met": None if values[name] is None else values[name] >= target,
        }
        for name, target in TARGETS.items()
    }


def _fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def write_markdown(result, path):
    c, m = result["config"], result["machine"]
    lines = [
        f"# Speed: {m['backend']} on {', '.join(m['gpus']) or m['cpu_model']}",
        "",
        f"Date {result['date']}. Model {c['model']} {c['image_size']}x"
        f"{c['image_size']}, batch {c['batch_size']}, {c['steps']} steps x "
        f"{c['repeats']} repeats (warm-up {c['warmup']}), optimizer "
        f"{c['optimizer']}, jit_compile={c['jit_compile']}.",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs; GPUs: "
        f"{', '.join(m['gpus']) or 'none'}; devices {m.get('devices')}.",
        f"Versions: python {m['python']}, keras {m['keras']}, "
        + ", ".join(
            f"{k} {m[k]}" for k in ("tensorflow", "jax", "torch") if k in m
        )
        + f", frozenbn {m['frozenbn']}.",
        "",
        "## Training step (images/s, higher is better)",
        "",
        "Ratios: of medians; paired = median over repeats of the ratio "
        "within a repeat; best = of the fastest samples.",
        "",
        "| arm | median | IQR | min-max | vs stock | paired vs stock | "
        "best vs stock | paired vs keras_trainable_false |",
        "|---|---|---|---|---|---|---|---|",
    ]
    tr = result["train"]
    for name, s in tr["arms"].items():
        lines.append(
            f"| {name} | {s['median']:.1f} | {s['q1']:.1f}-{s['q3']:.1f} "
            f"| {s['min']:.1f}-{s['max']:.1f} | "
            f"{_fmt(tr['ratios_vs_stock'].get(name))}x | "
            f"{_fmt(tr['paired_ratios_vs_stock'].get(name))}x | "
            f"{_fmt(tr['best_ratios_vs_stock'].get(name))}x | "
            f"{_fmt(tr['paired_ratios_vs_keras_trainable_false'].get(name))}x |"
        )
    lines += [
        "",
        "## Inference (images/s, higher is better)",
        "",
    ]
    inf = result["inference"]
    if inf.get("note"):
        lines += [inf["note"], ""]
    lines += [
        "| arm | median | IQR | min-max | vs stock | paired vs stock |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in inf["arms"].items():
        lines.append(
            f"| {name} | {s['median']:.1f} | {s['q1']:.1f}-{s['q3']:.1f} | "
            f"{s['min']:.1f}-{s['max']:.1f} | "
            f"{_fmt(inf['ratios_vs_stock'].get(name))}x | "
            f"{_fmt(inf['paired_ratios_vs_stock'].get(name))}x |"
        )
    conv = result["convert"]
    lines += [
        "",
        "## convert vs clone_model (seconds per call, lower is better)",
        "",
        "| arm | median | IQR | min-max | paired time vs clone_model | "
        "paired time vs clone_model_set_weights |",
        "|---|---|---|---|---|---|",
    ]
    vs_clone = conv["paired_time_ratios_vs_clone_model"]
    vs_clone_set = conv["paired_time_ratios_vs_clone_model_set_weights"]
    for name, s in conv["arms"].items():
        lines.append(
            f"| {name} | {s['median']:.3f} | {s['q1']:.3f}-{s['q3']:.3f} | "
            f"{s['min']:.3f}-{s['max']:.3f} | "
            f"{_fmt(vs_clone.get(name))}x | {_fmt(vs_clone_set.get(name))}x |"
        )
    ex = result["exactness"]
    lines += [
        "",
        "## Exactness: frozenbn vs Keras BN training=False",
        "",
        "frozenbn called with training=True (the path fit() takes); "
        "rel = max abs diff / max abs stock output.",
        "",
        f"- model output: max abs diff {ex['model_max_abs_diff']:.3g} "
        f"(max |output| {ex['model_output_max_abs']:.3g}, rel "
        f"{ex['model_max_rel_diff']:.3g})",
        f"- per BN layer: max abs diff {ex['per_layer_max_abs_diff']:.3g} "
        f"(max rel {ex['per_layer_max_rel_diff']:.3g}); "
        f"{ex['per_layer_bit_exact']}/{ex['num_bn_layers']} layers bit-exact",
        f"- inference mode (training=False): model max abs diff "
        f"{ex['model_inference_max_abs_diff']:.3g}, per layer "
        f"{ex['per_layer_inference_max_abs_diff']:.3g}",
        "",
        "## Targets (DESIGN.md)",
        "",
        "Values are paired ratios (median over repeats of the ratio of "
        "two arms run back to back); convert: clone_model time / convert "
        "time.",
        "",
        "| ratio | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, t in result["targets"].items():
        lines.append(
            f"| {name} | {_fmt(t['value'])} | >= {t['target']} | "
            f"{'n/a' if t['met'] is None else ('yes' if t['met'] else 'no')} |"
        )
    peer = result.get("torchvision_peer")
    if peer and "arms" in peer:
        lines += [
            "",
            f"## torchvision peer ({peer['device']}, torchvision "
            f"{peer['torchvision']}; images/s)",
            "",
            peer["note"],
            "",
            "| arm | median | IQR | vs torchvision_bn |",
            "|---|---|---|---|",
        ]
        for name, s in peer["arms"].items():
            lines.append(
                f"| {name} | {s['median']:.1f} | {s['q1']:.1f}-{s['q3']:.1f}"
                f" | {_fmt(peer['ratios_vs_torchvision_bn'].get(name))}x |"
            )
    elif peer:
        lines += ["", f"torchvision peer: {peer.get('skipped')}"]
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_plot(result, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels = [
        ("Training step (images/s)", result["train"]["arms"]),
        ("Inference (images/s)", result["inference"]["arms"]),
        ("convert vs clone (s, lower is better)", result["convert"]["arms"]),
    ]
    peer = result.get("torchvision_peer")
    if peer and "arms" in peer:
        panels.append(("torchvision peer (images/s)", peer["arms"]))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 4.2)
    )
    for ax, (title, arms) in zip(np.atleast_1d(axes), panels):
        names = list(arms)
        med = [arms[n]["median"] for n in names]
        err = [
            [arms[n]["median"] - arms[n]["q1"] for n in names],
            [arms[n]["q3"] - arms[n]["median"] for n in names],
        ]
        ax.bar(range(len(names)), med, yerr=err, capsize=4,
               color=["#888888"] + ["#3b7dd8"] * (len(names) - 1))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
    m, c = result["machine"], result["config"]
    fig.suptitle(
        f"frozenbn speed — {m['backend']}, "
        f"{', '.join(m['gpus']) or m['cpu_model']}, {c['model']} "
        f"{c['image_size']}px batch {c['batch_size']} (bars: median, "
        "whiskers: IQR)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet50", choices=("resnet50", "mini"))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5,
                   help="training steps per timed sample")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed samples per arm (interleaved)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed samples per arm before timing")
    p.add_argument("--convert-repeats", type=int, default=None,
                   help="timed convert/clone calls (default: --repeats)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test size: mini CNN, 16px, batch 4, 1 step, "
                   "2 repeats")
    p.add_argument("--torchvision-peer", action="store_true",
                   help="also time torchvision ResNet50 with "
                   "FrozenBatchNorm2d (torch backend)")
    p.add_argument("--skip", default="",
                   help="comma-separated sections to skip: "
                   "train,inference,convert")
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks",
                                                 "results"))
    p.add_argument("--tag", default=None,
                   help="file name stem (default speed_<backend>_<cpu|gpu>)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.image_size, args.batch_size = "mini", 16, 4
        args.steps, args.repeats, args.warmup = 1, 2, 1
    if args.convert_repeats is None:
        args.convert_repeats = args.repeats
    return args


def main(argv=None):
    args = parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    info = machine_info()
    print(f"backend {info['backend']}, {info['cpu_model']}, "
          f"gpus {info['gpus']}", flush=True)
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    x_np = rng.normal(size=shape).astype("float32")
    y_np = rng.integers(0, NUM_CLASSES, size=(args.batch_size,))
    x = keras.ops.convert_to_tensor(x_np)
    y = keras.ops.convert_to_tensor(y_np.astype("int32"))

    keras.utils.set_random_seed(0)
    base, _ = _build_base(args.model, args.image_size, x)
    frozen = frozenbn.convert(base)
    result = {
        "benchmark": "speed",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        "config": {
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "convert_repeats": args.convert_repeats,
            "optimizer": args.optimizer,
            "num_classes": NUM_CLASSES,
            "timing": "model.train_on_batch / predict_on_batch, "
            "jit_compile='auto'",
        },
        "machine": info,
    }

    print("exactness ...", flush=True)
    result["exactness"] = bench_exactness(base, frozen, x)
    print(f"  {result['exactness']}", flush=True)

    if "train" not in skip:
        models = {
            "stock": _clone_with(base, None),
            "keras_trainable_false": _bn_trainable_false(base),
            "naive_frozen": _naive_frozen(base),
            "frozenbn": frozenbn.convert(base),
            "frozenbn_trainable_false": _frozenbn_trainable_false(base),
        }
        for m in models.values():
            _compile(m, args.optimizer)
        result["config"]["jit_compile"] = models["stock"].jit_compile
        print("training steps ...", flush=True)
        arms = bench_train(models, x, y, args)
        result["train"] = {
            "unit": "images/s",
            "arms": arms,
            "ratios_vs_stock": _ratios(arms, "stock"),
            "ratios_vs_keras_trainable_false": _ratios(
                arms, "keras_trainable_false"
            ),
            "paired_ratios_vs_stock": _paired_ratios(arms, "stock"),
            "paired_ratios_vs_keras_trainable_false": _paired_ratios(
                arms, "keras_trainable_false"
            ),
            # Best sample per arm: the least disturbed by other load.
            "best_ratios_vs_stock": _ratios(arms, "stock", key="max"),
            "best_ratios_vs_keras_trainable_false": _ratios(
                arms, "keras_trainable_false", key="max"
            ),
        }
        for key in ("paired_ratios_vs_stock",
                    "paired_ratios_vs_keras_trainable_false",
                    "best_ratios_vs_stock",
                    "best_ratios_vs_keras_trainable_false"):
            print(f"  {key}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in result["train"][key].items()))
        _print_arms(arms, "images/s")
        del models
        gc.collect()
    result["config"].setdefault("jit_compile", base.jit_compile)

    if "inference" not in skip:
        fold = _lazy_fold()
        inf_models = {"stock": base, "frozenbn": frozen}
        note = None
        if fold is None:
            note = "frozenbn.fold is not available yet: folded arm skipped."
            print(note)
        else:
            folded, report = fold(base)
            inf_models["folded"] = folded
            ref = keras.ops.convert_to_numpy(base(x, training=False))
            got = keras.ops.convert_to_numpy(folded(x, training=False))
            result["fold_max_abs_diff"] = float(np.max(np.abs(ref - got)))
            result["fold_report"] = {
                "folded": len(getattr(report, "folded", ())),
                "left": len(getattr(report, "left", ())),
                "text": str(report)[:2000],
            }
        print("inference ...", flush=True)
        arms = bench_infer(inf_models, x, args)
        result["inference"] = {
            "unit": "images/s",
            "arms": arms,
            "ratios_vs_stock": _ratios(arms, "stock"),
            "paired_ratios_vs_stock": _paired_ratios(arms, "stock"),
            "note": note,
        }
        _print_arms(arms, "images/s")

    if "convert" not in skip:
        print("convert ...", flush=True)
        arms = bench_convert(base, args.convert_repeats)
        result["convert"] = {
            "unit": "s",
            "arms": arms,
            "time_ratios_vs_clone_model": {
                name: arms[name]["median"] / arms["clone_model"]["median"]
                for name in arms
            },
            "paired_time_ratios_vs_clone_model": _paired_ratios(
                arms, "clone_model"
            ),
            "paired_time_ratios_vs_clone_model_set_weights": _paired_ratios(
                arms, "clone_model_set_weights"
            ),
        }
        _print_arms(arms, "s")

    if args.torchvision_peer:
        if keras.config.backend() != "torch":
            print("--torchvision-peer needs KERAS_BACKEND=torch: skipped.")
            result["torchvision_peer"] = {"skipped": "backend is not torch"}
        else:
            print("torchvision peer ...", flush=True)
            result["torchvision_peer"] = bench_torchvision(args)

    if not skip:
        result["targets"] = _targets(result)
        for name, t in result["targets"].items():
            print(f"  {name}: {_fmt(t['value'])} (target {t['target']})")

    os.makedirs(args.out, exist_ok=True)
    stem = args.tag or f"speed_{info['backend']}_{info['device_kind']}"
    base_path = os.path.join(args.out, stem)
    _common.write_json(result, base_path + ".json")
    if not skip:
        write_markdown(result, base_path + ".md")
        write_plot(result, base_path + ".png")
    print(f"wrote {base_path}.json/.md/.png")
    return result


def _print_arms(arms, unit):
    for name, s in arms.items():
        print(
            f"  {name:26s} median {s['median']:9.3f} {unit} "
            f"(IQR {s['q1']:.3f}-{s['q3']:.3f}, "
            f"min-max {s['min']:.3f}-{s['max']:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
