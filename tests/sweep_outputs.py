"""Records what the tools compute on the sweep's models, and compares records.

A refactor of the core must not change what `convert`, `fold`, `fuse` and
`recalibrate` compute. This records, for every model of `tests/model_zoo.py`
(built as the sweep builds it: random weights, randomized BN statistics,
two small images), the outputs of the converted, folded and fused models
and the statistics `recalibrate` writes, one `.npz` file per model; then
compares two such records bit for bit and prints the largest difference
per tool where they are not identical.

    python -m tests.sweep_outputs record DIR [--full]
    python -m tests.sweep_outputs compare BEFORE_DIR AFTER_DIR

`record` takes the models of every push (one per code path); `--full` takes
every model. Run `record` at the commit before a change (a `git worktree`)
and after it, with the same backend and packages.
"""

import argparse
import os
import sys

import keras
import numpy as np

from tests import model_zoo
from tests import testing


def _flat(outputs) -> list:
    return [np.asarray(testing.to_numpy(o)) for o in keras.tree.flatten(outputs)]


def record_model(spec) -> dict:
    """`{name: array}` of one model: each tool's outputs and statistics."""
    import frozenbn

    keras.utils.set_random_seed(0)  # the same weights in every record
    model = testing.randomize_batch_norm(spec.build())
    x = spec.images()
    arrays = {}

    def put(tool, outputs):
        for i, value in enumerate(_flat(outputs)):
            arrays[f"{tool}/{i}"] = value

    put("reference", testing.outputs(model, x))
    converted = frozenbn.convert(model)
    put("convert", testing.outputs(converted, x))
    put("fold", testing.outputs(frozenbn.fold(model)[0], x))
    fused = frozenbn.fuse(converted)[0]
    put("fuse", testing.outputs(fused, x))
    testing.disable_stochastic_layers(fused)
    put("fuse_training", testing.outputs(fused, x, training=True))
    frozenbn.recalibrate(model, x, verbose=0)
    layers = testing.layers_of(model, keras.layers.BatchNormalization)
    for i, layer in enumerate(layers):
        arrays[f"recalibrate/{i}/mean"] = testing.to_numpy(layer.moving_mean)
        arrays[f"recalibrate/{i}/variance"] = testing.to_numpy(
            layer.moving_variance)
    return arrays


def record(directory: str, full: bool) -> None:
    os.makedirs(directory, exist_ok=True)
    specs = [s for s in model_zoo.all_models() if full or not s.full]
    bar = keras.utils.Progbar(len(specs), unit_name="model")
    for index, spec in enumerate(specs, 1):
        try:
            arrays = record_model(spec)
        except ValueError as error:  # Keras refuses it on this backend
            if "not available with the" not in str(error):
                raise
            arrays = {}
        np.savez(os.path.join(directory, f"{spec.id}.npz"), **arrays)
        keras.backend.clear_session()
        bar.update(index)


def compare(before: str, after: str) -> int:
    """Prints identical/different per tool; returns the number of models
    whose records differ in their names (a structural change)."""
    worst, identical, structural = {}, {}, []
    for name in sorted(os.listdir(before)):
        a = np.load(os.path.join(before, name))
        b = np.load(os.path.join(after, name))
        if set(a.files) != set(b.files):
            structural.append(name)
            continue
        for key in a.files:
            tool = key.split("/")[0]
            same = np.array_equal(a[key], b[key], equal_nan=True)
            identical[tool] = identical.get(tool, True) and same
            diff = 0.0 if same else float(np.nanmax(np.abs(
                a[key].astype(np.float64) - b[key].astype(np.float64))))
            if diff >= worst.get(tool, (0.0, ""))[0]:
                worst[tool] = (diff, f"{name[:-4]} {key}")
    models = len(os.listdir(before))
    for tool in sorted(identical):
        diff, where = worst[tool]
        state = "bit-identical" if identical[tool] else (
            f"largest difference {diff:.3g} ({where})")
        print(f"{tool}: {state}")
    for name in structural:
        print(f"{name[:-4]}: the records hold different arrays")
    print(f"{models} models compared, {len(structural)} with different arrays")
    return len(structural)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("directory")
    rec.add_argument("--full", action="store_true")
    cmp_ = commands.add_parser("compare")
    cmp_.add_argument("before")
    cmp_.add_argument("after")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.directory, args.full)
        return 0
    return 1 if compare(args.before, args.after) else 0


if __name__ == "__main__":
    sys.exit(main())
