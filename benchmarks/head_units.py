"""Why frozen fine-tuning can learn nothing: the head's ReLU units, per epoch.

The scenario of `frozenbn demo` (issue 14's diagnosis): ResNet50 pretrained
on the source domain, `frozenbn.convert` (source statistics frozen), the bug
report's head, fine-tuned on the target with Adam. Per seed and learning
rate this records

- the backbone's pooled features on the source and on the target images:
  their mean and their spread between images (mean over features of the
  standard deviation across images), which says how much of the target's
  variation the source statistics keep;
- after every epoch: the training loss and accuracy that `fit` reports, the
  share of the head's first Dense-ReLU units that are zero for every
  training image ("dead": no gradient reaches them again), and the pooled
  features' mean and spread on the target.

Writes `head_units_<config>_<backend>_<cpu|gpu>.{json,md}` to `--out`
(default `benchmarks/results/`). No number is asserted.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/head_units.py --seeds 0,1 --lrs 1e-4,1e-5
    python benchmarks/head_units.py --tiny
"""

import os
import sys
from typing import Optional
from typing import Sequence

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

from frozenbn.demo import images  # noqa: E402
from frozenbn.demo import scenario  # noqa: E402
from frozenbn.demo import training  # noqa: E402

CONFIGS = {
    "tiny": dict(pretrain_epochs=0, epochs=1, max_source=64, max_target=64),
    "small": dict(epochs=6),
}


def feature_spread(features: np.ndarray) -> dict:
    """Mean and between-image spread of pooled features `(n, channels)`."""
    return {"mean": float(features.mean()),
            "between_image_std": float(features.std(axis=0).mean())}


class HeadUnits(keras.callbacks.Callback):
    """Per epoch: dead units of the head's first Dense, target features."""

    def __init__(self, x, features, dense):
        super().__init__()
        self.x, self.features, self.dense, self.rows = x, features, dense, []

    def on_epoch_end(self, epoch, logs=None):
        pooled = self.features.predict(self.x, verbose=0)
        units = keras.ops.convert_to_numpy(self.dense(pooled))
        self.rows.append({
            "epoch": epoch + 1,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]),
            "dead_units": float(np.mean((units <= 0).all(axis=0))),
            "features": feature_spread(pooled),
        })


def _pooled(model, x) -> np.ndarray:
    return np.asarray(model.predict(x, verbose=0)).mean(axis=(1, 2))


def run(config: scenario.ScenarioConfig, lr: float, data) -> dict:
    """One seed at one learning rate: the records described above."""
    from frozenbn.convert import convert

    source, target, _ = scenario.prepare_data(data, config)
    backbone, _ = scenario.pretrained_backbone(config, source)
    start = {"source": feature_spread(_pooled(backbone, source.train.x)),
             "target": feature_spread(_pooled(backbone, target.train.x))}
    model = training.build_classifier(convert(backbone), config.seed)
    # Sequential: [backbone, GAP, Dense 64 relu, ...].
    features = keras.Model(model.inputs, model.layers[1].output)
    watch = HeadUnits(target.train.x, features, model.layers[2])
    model.compile(keras.optimizers.Adam(lr), "binary_crossentropy",
                  metrics=["accuracy"])
    keras.utils.set_random_seed(config.seed)
    model.fit(*target.train, batch_size=config.batch_size,
              epochs=config.epochs, verbose=0,
              callbacks=[watch, training.Progress(config.epochs, 1)])
    return {"seed": config.seed, "learning_rate": lr,
            "pretrained_features": start, "epochs": watch.rows}


def markdown(result: dict) -> str:
    """Per-run table: features, then per-epoch loss, accuracy, dead units."""
    lines = [f"# Head units: {result['config_name']}", "",
             _common.environment_line(result["environment"]), "",
             "Pooled backbone features (source statistics frozen): mean, and "
             "spread between images (mean over features of the std across "
             "images). Per epoch: fit loss, fit accuracy, share of the "
             "head's first Dense-ReLU units that are zero for every training "
             "image, and the target features' spread.", ""]
    for run_ in result["runs"]:
        src = run_["pretrained_features"]["source"]
        tgt = run_["pretrained_features"]["target"]
        lines += [f"## seed {run_['seed']}, Adam {run_['learning_rate']:g}",
                  "",
                  f"Before fine-tuning: source features mean "
                  f"{src['mean']:.3f}, spread {src['between_image_std']:.3f}; "
                  f"target features mean {tgt['mean']:.3f}, spread "
                  f"{tgt['between_image_std']:.3f}.", "",
                  "| epoch | fit loss | fit acc | dead units | target "
                  "feature spread |", "|---|---|---|---|---|"]
        lines += [f"| {r['epoch']} | {r['loss']:.3f} | {r['accuracy']:.3f} | "
                  f"{r['dead_units']:.2f} | "
                  f"{r['features']['between_image_std']:.3f} |"
                  for r in run_["epochs"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs every seed at every learning rate; writes JSON and markdown."""
    parser = _common.argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", dest="config", action="store_const",
                        const="tiny", default="small")
    _common.add_seeds_argument(parser, "0,1")
    parser.add_argument("--lrs", default="1e-4,1e-5")
    parser.add_argument("--out", default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    data = images.load_demo_data()
    runs = []
    for seed in args.seeds:
        for lr in (float(v) for v in args.lrs.split(",")):
            print(f"seed {seed}, Adam {lr:g}", flush=True)
            config = scenario.ScenarioConfig(**CONFIGS[args.config],
                                             seed=seed, curves=False)
            runs.append(run(config, lr, data))
    _common.write_result("head_units", args.config, CONFIGS[args.config],
                         runs, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
