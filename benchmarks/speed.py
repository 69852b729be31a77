"""Speed benchmark: what frozen BatchNormalization costs and saves.

Measures, on the backend named by `KERAS_BACKEND`, with ResNet50
(`weights=None`, BN statistics calibrated on one batch) as the fine-tuned
backbone:

- training-step throughput (images/s) of the arms of `speed_arms.py`:
  stock Keras BN, Keras BN `trainable=False`, a naive frozen layer,
  frozenbn (frozen, gamma/beta trained), frozenbn with gamma/beta frozen,
  `frozenbn.fuse` (frozen, gamma/beta trained) and the BN-folded network
  trained (the floor);
- inference throughput: stock, frozenbn and `frozenbn.fold`;
- wall time of `frozenbn.convert` vs `keras.models.clone_model`;
- the peak memory of a training step per arm, one fresh process each
  (`speed_memory.py`; `--memory-jobs` runs them side by side);
- on JAX, what XLA compiles each arm's step to: kernels, FLOPs and bytes
  of the optimized module (`speed_compiled.py`);
- exactness: frozenbn vs stock Keras `training=False`, fused vs frozenbn,
  folded vs stock (`speed_checks.py`);
- optionally (`--torchvision-peer`, torch backend) torchvision's ResNet50
  with `FrozenBatchNorm2d` on the same device (`speed_peer.py`).

A step is `model.train_on_batch(x, y)` on a model compiled with Keras's
defaults (`jit_compile="auto"`: a `tf.function` graph without XLA on a
CPU-only TensorFlow, XLA on a TensorFlow GPU, `jax.jit` on JAX, eager on
torch): the very `train_function` that `fit()` builds, synchronised with
the device by its Python-float results; inputs are backend tensors made
once. Arms are interleaved (`speed_timing.py`), and the check that
compilation stayed out of the timed samples is recorded per arm
(`warmup_check`); the report gives medians, quartiles and paired ratios,
and checks the targets (`speed_report.py`).

Writes `speed_<backend>_<device>.{json,md,png}` to `--out`, after every
section (train, compiled, inference, peer, each memory arm, convert),
so a run cut short keeps what it measured; `complete` in the JSON says
whether every section ran.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/speed.py \
        --image-size 64 --batch-size 32 --steps 1 --repeats 40 --warmup 2
    KERAS_BACKEND=jax python benchmarks/speed.py --tiny
"""

import datetime
import gc
import os
import sys

import _common

import keras  # noqa: E402  (after _common: the checkout's frozenbn first)

import frozenbn  # noqa: E402
import speed_arms  # noqa: E402
import speed_checks  # noqa: E402
import speed_compiled  # noqa: E402
import speed_memory  # noqa: E402
import speed_peer  # noqa: E402
import speed_report  # noqa: E402
import speed_timing  # noqa: E402
from frozenbn._report import fmt  # noqa: E402
from frozenbn.demo.machine import environment_info  # noqa: E402

SECTIONS = ("train", "compiled", "inference", "convert", "memory")
MEMORY_ARMS = "stock,keras_trainable_false,frozenbn,fused,folded"


def parse_args(argv=None):
    p = _common.argument_parser(__doc__.split("\n\n")[0])
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
    p.add_argument("--arms", default=",".join(speed_arms.TRAIN_ARMS),
                   help="comma-separated training arms")
    p.add_argument("--memory-arms", default=MEMORY_ARMS,
                   help="comma-separated arms whose step memory is measured")
    p.add_argument("--memory-jobs", type=int, default=1,
                   help="memory processes run at once (each measures its "
                   "own peaks, so they may share the machine)")
    p.add_argument("--tiny", action="store_true",
                   help="smoke-test size: mini CNN, 16px, batch 4, 1 step, "
                   "2 repeats")
    p.add_argument("--torchvision-peer", action="store_true",
                   help="also time torchvision ResNet50 with "
                   "FrozenBatchNorm2d (torch backend)")
    p.add_argument("--skip", default="",
                   help="comma-separated sections to skip: "
                   + ",".join(SECTIONS))
    p.add_argument("--out", default=_common.RESULTS_DIR)
    p.add_argument("--tag", default=None,
                   help="file name stem (default speed_<backend>_<cpu|gpu>)")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.image_size, args.batch_size = "mini", 16, 4
        args.steps, args.repeats, args.warmup = 1, 2, 1
    if args.convert_repeats is None:
        args.convert_repeats = args.repeats
    return args


def run_train(base, x, y, args, skip=()) -> dict:
    arms = [a for a in args.arms.split(",") if a]
    models = {name: speed_arms.TRAIN_ARMS[name](base) for name in arms}
    for model in models.values():
        speed_arms.compile_model(model, args.optimizer)
    print("training steps ...", flush=True)
    timed, check = speed_timing.time_train(models, x, y, args)
    result = {
        "unit": "images/s",
        "arms": timed,
        "warmup_check": check,
        "ratios_vs_stock": speed_timing.ratios(timed, "stock"),
        # Best sample per arm: the least disturbed by other load.
        "best_ratios_vs_stock": speed_timing.ratios(timed, "stock", "max"),
    }
    for base_arm in ("stock", "keras_trainable_false", "folded"):
        result[f"paired_ratios_vs_{base_arm}"] = speed_timing.paired_ratios(
            timed, base_arm
        )
        result[f"paired_cpu_ratios_vs_{base_arm}"] = (
            speed_timing.paired_ratios(timed, base_arm, "cpu_samples")
        )
    _print_arms(timed, "images/s")
    for key in ("paired_ratios_vs_stock", "paired_cpu_ratios_vs_stock",
                "paired_ratios_vs_keras_trainable_false",
                "paired_ratios_vs_folded"):
        print(f"  {key}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in result[key].items()), flush=True)
    _print_check(check)
    if "compiled" not in skip and keras.config.backend() == "jax":
        print("compiled steps ...", flush=True)
        result["compiled"] = speed_compiled.profiles(models, x, y)
    return result


def run_inference(base, frozen, x, args) -> dict:
    folded, _ = frozenbn.fold(base)
    models = {"stock": base, "frozenbn": frozen, "folded": folded}
    print("inference ...", flush=True)
    timed, check = speed_timing.time_inference(models, x, args)
    _print_arms(timed, "images/s")
    _print_check(check)
    return {
        "unit": "images/s",
        "arms": timed,
        "warmup_check": check,
        "ratios_vs_stock": speed_timing.ratios(timed, "stock"),
        "paired_ratios_vs_stock": speed_timing.paired_ratios(timed, "stock"),
    }


def run_convert(base, args) -> dict:
    print("convert ...", flush=True)
    timed = speed_timing.time_convert(base, args.convert_repeats)
    _print_arms(timed, "s")
    # Times: clone_model's over each arm's, so above 1 is faster.
    clone = speed_timing.paired_ratios(timed, "clone_model")
    return {
        "unit": "s",
        "arms": timed,
        "paired_speed_vs_clone_model": {k: 1 / v for k, v in clone.items()},
    }


def main(argv=None):
    args = parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    env = environment_info()
    print(f"backend {env['backend']}, {env['device']}, load "
          f"{env['load_average']}", flush=True)
    x, y = speed_arms.data(args.batch_size, args.image_size)
    keras.utils.set_random_seed(0)
    base = speed_arms.build_base(args.model, args.image_size, x)
    frozen = frozenbn.convert(base)
    result = {
        "benchmark": "speed",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(
            [f"KERAS_BACKEND={env['backend']} python benchmarks/speed.py"]
            + sys.argv[1:]
        ),
        "config": {
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "convert_repeats": args.convert_repeats,
            "optimizer": args.optimizer,
            "num_classes": speed_arms.NUM_CLASSES,
            "jit_compile": speed_arms.compile_model(
                base, args.optimizer
            ).jit_compile,
            "timing": "model.train_on_batch / predict_on_batch, "
            "jit_compile='auto'",
        },
        "machine": env,
    }
    print("exactness ...", flush=True)
    result["exactness"] = speed_checks.frozen_vs_stock(base, frozen, x)
    result["fused_exactness"] = speed_checks.fused_vs_frozen(frozen, x)
    result["fold_exactness"] = speed_checks.folded_vs_stock(
        base, frozenbn.fold(base)[0], x
    )
    print(f"  {result['exactness']}\n  fused {result['fused_exactness']}",
          flush=True)

    stem = args.tag or _common.result_stem("speed", "", env)
    path = os.path.join(args.out, stem)
    # Written after every section, so a run stopped by a time limit (the
    # GPU script gives each part a budget) keeps what it measured.
    if "train" not in skip:
        result["train"] = run_train(base, x, y, args, skip)
        gc.collect()
        _write(result, path)
    if "inference" not in skip:
        result["inference"] = run_inference(base, frozen, x, args)
        _write(result, path)
    if args.torchvision_peer:
        if keras.config.backend() != "torch":
            print("--torchvision-peer needs KERAS_BACKEND=torch: skipped.")
            result["torchvision_peer"] = {"skipped": "backend is not torch"}
        else:
            print("torchvision peer ...", flush=True)
            result["torchvision_peer"] = speed_peer.time_torchvision(args)
        _write(result, path)
    if "memory" not in skip:
        print("memory (one process per arm) ...", flush=True)
        result["memory"] = {"arms": {}, "note": speed_memory.NOTE}
        arms = [a for a in args.memory_arms.split(",") if a]
        jobs = max(1, args.memory_jobs)
        for i in range(0, len(arms), jobs):
            measured = speed_memory.measure(arms[i:i + jobs], args)["arms"]
            result["memory"]["arms"].update(measured)
            _write(result, path)
    if "convert" not in skip:
        result["convert"] = run_convert(base, args)
    result["complete"] = True
    _write(result, path)
    for name, t in result["targets"].items():
        print(f"  {name}: {fmt(t['value'])} (target "
              f"{t['target']}, met {t['met']})")
    print(f"wrote {path}.json/.md/.png")
    return result


def _write(result: dict, path: str) -> None:
    """Writes the JSON, markdown and PNG of what has been measured so far."""
    result.setdefault("complete", False)
    result["load_average_end"] = environment_info()["load_average"]
    result["targets"] = speed_report.targets(result)
    _common.write_json(result, path + ".json")
    _common.write_text(speed_report.markdown(result), path + ".md")
    speed_report.plot(result, path + ".png")


def _print_check(check):
    for name, c in check.items():
        print(f"  timed region of {name}: first sample "
              f"{c['first_vs_median']:.2f}x the median, compiles "
              f"{c['timed_compiles']}", flush=True)


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
