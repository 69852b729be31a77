"""Speed benchmark: the statistics pass against its floor and `predict`.

A statistics pass must run the model forward with BN on batch statistics;
that work, a compiled training-mode forward loop over the same batches, is
its floor (`predict` is not: in inference BN is an affine op a compiler
folds away). This measures, on the backend named by `KERAS_BACKEND`, the
wall time of

- `predict`: `model.predict(x, batch_size=B)`, Keras's compiled inference;
- `floor`: the same `predict` machinery running the model with
  `training=True` (BN on batch statistics), on a copy of the model;
- `recalibrate`: `frozenbn.recalibrate(model, x, batch_size=B)`;
- `audit`: `frozenbn.audit(model, x, batch_size=B)` (no labels);
- optionally `recalibrate_eager`: the pass op by op, on a copy of the
  model compiled with `run_eagerly=True` (slow, so only on request);

over the same images. Models: `resnet50` (`weights=None`), `blocks8` (8
Conv+BN+ReLU blocks of 16 channels, dispatch-bound: its compute is small,
so what a pass adds per batch shows) and `mini` (smoke runs). Each arm runs
once first (tracing and compilation: `first_call_s`), then `--repeats`
times interleaved, in an order rotated from one repeat to the next so
drifting machine load hits all arms alike. Reported: median, IQR, min/max
seconds per call, and paired ratios (the median over repeats of the
within-repeat ratio) against `floor` and `predict`. Targets: recalibrate
<= 1.10x floor; audit <= 1.10x its floor, `floor` + `predict` (it runs
the model both ways); recalibrate <= 1.2x predict.

Writes `recalibrate_<model>_<size>_<backend>_<device>.{json,md,png}` to
`--out` (default `benchmarks/results/`). `bench_recalibrate(...)` does the
same from Python and returns the result dict.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/speed_recalibrate.py
    KERAS_BACKEND=jax python benchmarks/speed_recalibrate.py --model blocks8 \
        --image-size 16 --images 4096
    KERAS_BACKEND=torch python benchmarks/speed_recalibrate.py --tiny
"""

import datetime
import json
import os
import re
import sys
import time
from typing import Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (puts the checkout first on sys.path)

import keras  # noqa: E402

import frozenbn  # noqa: E402
from frozenbn import _report  # noqa: E402
from frozenbn.demo import machine  # noqa: E402

DOCS = ("docs/results.md", "recalibrate-table")
"""The page and marker of the block that `--docs` rewrites from every
`recalibrate_*_cpu.json` file of the results folder."""

TARGET = 1.2  # recalibrate time / predict time, at most
FLOOR_TARGET = 1.10  # recalibrate or audit time / floor time, at most


def bench_recalibrate(
    model_name: str = "resnet50",
    image_size: int = 64,
    images: int = 512,
    batch_size: int = 32,
    repeats: int = 5,
    eager: bool = False,
    out: Optional[str] = _common.RESULTS_DIR,
    seed: int = 0,
) -> dict:
    """Times recalibrate against predict; writes JSON, markdown and PNG.

    Args:
        model_name: `"resnet50"`, `"blocks8"` or `"mini"` (two conv
            blocks, for smoke runs).
        image_size: Height and width of the images.
        images: Number of images per call.
        batch_size: Batch size of both calls.
        repeats: Timed calls per arm, interleaved.
        eager: Also time the eager pass (`recalibrate_eager`).
        out: Folder for the result files; `None` writes nothing.
        seed: Seed of the model and the images.

    Returns:
        The result dict (also the JSON file's content).
    """
    keras.utils.set_random_seed(seed)
    env = _common.environment()
    model = _build(model_name, image_size)
    x = np.random.default_rng(seed).uniform(
        0, 255, (images, image_size, image_size, 3)
    ).astype("float32")
    x = keras.applications.resnet50.preprocess_input(x)

    def recalibrate(target):
        return lambda: frozenbn.recalibrate(
            target, x, batch_size=batch_size, verbose=0
        )

    floor = TrainingForward(_copy(model))
    arms = {
        "predict": lambda: model.predict(x, batch_size=batch_size, verbose=0),
        "floor": lambda: floor.predict(x, batch_size=batch_size, verbose=0),
        "recalibrate": recalibrate(model),
        "audit": lambda: frozenbn.audit(model, x, batch_size=batch_size,
                                        verbose=0),
    }
    if eager:
        eager_model = _copy(model)
        eager_model.compile(run_eagerly=True)
        arms["recalibrate_eager"] = recalibrate(eager_model)

    first = {}
    for name, fn in arms.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    timings = _interleaved(arms, repeats)
    result = {
        "benchmark": "recalibrate",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "environment": env,
        "config": {
            "model": model_name,
            "image_size": image_size,
            "images": images,
            "batch_size": batch_size,
            "repeats": repeats,
            "seed": seed,
        },
        "first_call_s": first,
        "seconds": timings,
        "ratio_vs_predict": _ratios(timings, "predict", paired=False),
        "paired_ratio_vs_predict": _ratios(timings, "predict"),
        "paired_ratio_vs_floor": _ratios(timings, "floor"),
        "load_average_after": machine.environment_info()["load_average"],
    }
    if out is not None:
        stem = _common.result_stem(
            "recalibrate", f"{model_name}_{image_size}", env
        )
        _write(result, os.path.join(out, stem))
    return result


def _write(result, stem) -> None:
    """Writes `stem.{json,md,png}`, with the targets scored from the samples."""
    result["audit_paired_ratio_vs_its_floor"] = _audit_vs_its_floor(result)
    result["targets"] = _targets(result)
    _report.write_json(result, stem + ".json")
    _common.write_text(_markdown(result), stem + ".md")
    _plot(result, stem + ".png")


def _audit_vs_its_floor(result) -> float:
    """audit over its floor, per repeat: it runs the model twice per batch
    (as `fit` normalizes and in inference), so its floor is `floor` plus
    `predict`."""
    seconds = result["seconds"]
    floor = (np.asarray(seconds["floor"]["samples"])
             + np.asarray(seconds["predict"]["samples"]))
    return float(np.median(np.asarray(seconds["audit"]["samples"]) / floor))


def _targets(result) -> dict:
    return {
        f"recalibrate <= {FLOOR_TARGET}x floor":
            result["paired_ratio_vs_floor"]["recalibrate"] <= FLOOR_TARGET,
        f"audit <= {FLOOR_TARGET}x its floor (floor + predict)":
            result["audit_paired_ratio_vs_its_floor"] <= FLOOR_TARGET,
        f"recalibrate <= {TARGET}x predict":
            result["paired_ratio_vs_predict"]["recalibrate"] <= TARGET,
    }


def profile_recalibrate(model_name="blocks8", image_size=16, images=4096,
                        batch_size=32, out=_common.RESULTS_DIR, seed=0) -> str:
    """cProfile of one `recalibrate` call after a warm-up call; writes
    `recalibrate_<model>_<size>_<backend>_<device>_profile.txt`."""
    import cProfile
    import io
    import pstats

    keras.utils.set_random_seed(seed)
    model = _build(model_name, image_size)
    x = np.random.default_rng(seed).uniform(
        0, 255, (images, image_size, image_size, 3)).astype("float32")
    frozenbn.recalibrate(model, x, batch_size=batch_size, verbose=0)
    profiler = cProfile.Profile()
    profiler.enable()
    frozenbn.recalibrate(model, x, batch_size=batch_size, verbose=0)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats("frozenbn", 20)
    stem = _common.result_stem("recalibrate", f"{model_name}_{image_size}",
                               _common.environment())
    path = os.path.join(out, stem + "_profile.txt")
    # File names relative to the checkout or to site-packages: no machine
    # paths in a committed file.
    listing = re.sub(r"\S*site-packages/", "", text.getvalue())
    _common.write_text(
        f"cProfile of frozenbn.recalibrate({model_name} {image_size}x"
        f"{image_size}, {images} images, batch {batch_size}), backend "
        f"{keras.config.backend()}, after one warm-up call.\n"
        + listing.replace(_common.ROOT + os.sep, ""), path)
    return path


class TrainingForward(keras.Model):
    """`model(x, training=True)`, so that `predict` compiles the floor."""

    def __init__(self, model):
        super().__init__(name="floor")
        self.inner = model

    def call(self, x):
        return self.inner(x, training=True)


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _ratios(timings, base, paired=True):
    """Each arm's time over `base`'s: of medians, or paired (per repeat)."""
    if not paired:
        return {name: t["median"] / timings[base]["median"]
                for name, t in timings.items()}
    reference = np.asarray(timings[base]["samples"])
    return {name: float(np.median(np.asarray(t["samples"]) / reference))
            for name, t in timings.items()}


def _build(model_name, image_size):
    shape = (image_size, image_size, 3)
    if model_name == "resnet50":
        return keras.applications.ResNet50(
            weights=None, input_shape=shape, classes=10
        )
    if model_name == "mini":
        inputs = keras.Input(shape)
        h = inputs
        for i, filters in enumerate((8, 16)):
            h = keras.layers.Conv2D(filters, 3, padding="same")(h)
            h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
            h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="mini")
    if model_name == "blocks8":
        inputs = keras.Input(shape)
        h = inputs
        for i in range(8):
            h = keras.layers.Conv2D(16, 3, padding="same")(h)
            h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
            h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h), name="blocks8")
    raise ValueError(
        f"Unknown model {model_name!r}: resnet50, blocks8 or mini.")


def _interleaved(arms, repeats):
    names = list(arms)
    samples = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            arms[name]()
            samples[name].append(time.perf_counter() - start)
    result = {}
    for name, values in samples.items():
        a = np.asarray(values)
        q1, median, q3 = np.percentile(a, [25, 50, 75])
        result[name] = {
            "median": float(median),
            "q1": float(q1),
            "q3": float(q3),
            "min": float(a.min()),
            "max": float(a.max()),
            "samples": [float(v) for v in a],
        }
    return result


def _markdown(result) -> str:
    config, env = result["config"], result["environment"]
    rows = [
        [
            f"`{name}`",
            f"{t['median']:.3f} ({t['q1']:.3f}-{t['q3']:.3f})",
            f"{result['first_call_s'][name]:.2f}",
            f"{result['paired_ratio_vs_floor'][name]:.2f}x",
            f"{result['paired_ratio_vs_predict'][name]:.2f}x",
        ]
        for name, t in result["seconds"].items()
    ]
    table = _report.format_table(
        ["arm", "seconds per call, median (IQR)", "first call (s)",
         "vs floor (paired)", "vs predict (paired)"],
        rows,
        markdown=True,
    )
    targets = "; ".join(f"{name}: {'met' if met else 'not met'}"
                        for name, met in result["targets"].items())
    return (
        f"# The statistics pass vs its floor and predict, {config['model']} "
        f"{config['image_size']}x{config['image_size']}, backend "
        f"{env['backend']}\n\n"
        f"{machine.environment_line(env)}\n\n"
        f"{config['images']} images, batch {config['batch_size']}, "
        f"{config['repeats']} interleaved repeats after one untimed call per "
        f"arm (its time is the first-call column: tracing/compilation). "
        f"`floor`: the model's forward pass with `training=True` (BN on "
        f"batch statistics), compiled by `predict`; audit's own floor is "
        f"`floor` + `predict` (it runs the model both ways): "
        f"{result['audit_paired_ratio_vs_its_floor']:.2f}x (paired). Load "
        f"average after the run: {result['load_average_after']}.\n\n"
        f"{table}\n\n"
        f"Targets (paired): {targets}.\n"
    )


def docs_block(results_dir: str = _common.RESULTS_DIR) -> str:
    """A markdown table of every committed CPU run, one row per file."""
    rows = []
    for name in sorted(os.listdir(results_dir)):
        if not (name.startswith("recalibrate_") and name.endswith("_cpu.json")):
            continue
        with open(os.path.join(results_dir, name), encoding="utf-8") as f:
            result = json.load(f)
        config, env = result["config"], result["environment"]
        floor = result["paired_ratio_vs_floor"]
        rows.append([
            f"{config['model']} {config['image_size']}x{config['image_size']}",
            f"{env['backend']} {env['backend_version']}",
            f"{result['seconds']['predict']['median']:.3g}",
            f"{result['seconds']['floor']['median']:.3g}",
            f"**{floor['recalibrate']:.2f}x**",
            f"**{result['audit_paired_ratio_vs_its_floor']:.2f}x**",
            f"{result['paired_ratio_vs_predict']['recalibrate']:.2f}x",
            f"[{name[:-5]}.md](../benchmarks/results/{name[:-5]}.md)",
        ])
    return _report.format_table(
        ["model", "backend", "predict, s", "floor, s", "recalibrate vs floor",
         "audit vs floor + predict", "recalibrate vs predict", "file"],
        rows, markdown=True)


def _plot(result, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["seconds"])
    figure = Figure(figsize=(6, 0.6 + 0.6 * len(names)))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for i, name in enumerate(names):
        samples = result["seconds"][name]["samples"]
        axes.scatter(samples, [i] * len(samples), color="tab:blue", s=12)
        axes.plot([result["seconds"][name]["median"]] * 2, [i - 0.3, i + 0.3],
                  color="black")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("seconds per call (dots: repeats; bar: median)")
    config, env = result["config"], result["environment"]
    axes.set_title(
        f"{config['model']} {config['image_size']}px, {config['images']} "
        f"images, {env['backend']} on {env['device_kind']}", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)


def main(argv=None) -> int:
    parser = _common.argument_parser(__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50",
                        choices=["resnet50", "blocks8", "mini"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eager", action="store_true",
                        help="also time the eager pass (slow)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: mini model, 64 images, 2 repeats, "
                        "nothing written")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, write a cProfile of one "
                        "recalibrate call (after a warm-up call)")
    parser.add_argument("--render", metavar="JSON",
                        help="only rewrite a run's .json targets, .md and "
                        ".png from its .json (no timing)")
    parser.add_argument("--docs", action="store_true",
                        help="only rewrite the table of docs/results.md "
                        "from the committed results files")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile_recalibrate(args.model, args.image_size, args.images,
                                  args.batch_size, args.out))
        return 0
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            _write(json.load(f), args.render[: -len(".json")])
        return 0
    if args.docs:
        page = os.path.join(_common.ROOT, DOCS[0])
        with open(page, encoding="utf-8") as f:
            text = f.read()
        _common.write_text(_common.replace_block(text, DOCS[1], docs_block()),
                           page)
        return 0
    if args.tiny:
        result = bench_recalibrate("mini", 16, 64, 16, 2, args.eager, None)
    else:
        result = bench_recalibrate(
            args.model, args.image_size, args.images, args.batch_size,
            args.repeats, args.eager, args.out,
        )
    for name, ratio in result["paired_ratio_vs_floor"].items():
        median = result["seconds"][name]["median"]
        print(f"{name:>20}: {median:.3f} s  {ratio:.2f}x floor, "
              f"{result['paired_ratio_vs_predict'][name]:.2f}x predict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
