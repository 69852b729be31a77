"""Can a smaller backbone replace the demo's ResNet50? `python backbones.py NAME`.

Runs the scenario with the demo's defaults but another backbone, on several
seeds, and writes `NAME_backbone.json` beside this file (and prints a
markdown table). NAME is one of:

- `small`: the network of `frozenbn demo --quick` (three stages of one
  Conv-BN block, 16-64 channels, 9 BN layers): the demo's arms at its
  frozen-statistics rate, and the arms with frozen statistics at higher
  rates, with a warm-up, and head-first.
- `medium`: a ResNet-18 at half width (four stages of two blocks, 32-256
  channels, 20 BN layers): the demo's arms at Adam 1e-4 for
  the frozen arm, and the frozen arm alone at 1e-5 and 3e-5.
- `medium_seeds5-9`: the same network, the demo's arms at Adam 1e-4 for the
  frozen arm, on five more seeds.
"""

import json
import os
import sys
import time

from frozenbn._report import write_json
from frozenbn.demo import images
from frozenbn.demo import scenario

DEMO = ("stock", "stock_recalibrated", "frozenbn")
FROZEN = ("frozenbn", "frozenbn_recalibrated", "keras_bn_frozen",
          "frozenbn_guide")
RUNS = {
    # name: ((arms, overrides of the demo's ScenarioConfig, seeds), ...)
    "small": (
        (DEMO, {}, (0, 1, 2)),
        (FROZEN, {"frozen_learning_rate": 1e-4}, (0, 1, 2)),
        (("frozenbn",), {"frozen_learning_rate": 1e-4,
                         "frozen_warmup_epochs": 3}, (0, 1, 2)),
        (("frozenbn",), {"frozen_learning_rate": 1e-3}, (0, 1, 2)),
    ),
    "medium": (
        (DEMO, {"frozen_learning_rate": 1e-4}, (0, 1, 2, 3, 4)),
        (("frozenbn",), {}, (0, 1)),
        (("frozenbn",), {"frozen_learning_rate": 3e-5}, (0, 1)),
    ),
    "medium_seeds5-9": (
        (DEMO, {"frozen_learning_rate": 1e-4}, (5, 6, 7, 8, 9)),
    ),
}


def main(name):
    rows = []
    data = images.load_demo_data()
    for arms, overrides, seeds in RUNS[name]:
        for seed in seeds:
            config = scenario.ScenarioConfig(
                backbone=name.split("_")[0], seed=seed, deterministic=True,
                **overrides)
            start = time.perf_counter()
            result = scenario.run_scenario(data, config, arms, verbose=0)
            seconds = time.perf_counter() - start
            for arm in result.arms:
                rows.append({
                    "seed": seed, "overrides": overrides, "arm": arm.name,
                    "label": arm.label, "run_seconds": round(seconds, 1),
                    "eval_fit": arm.ratio,
                    "eval_fit_mode": arm.statistics_ratio,
                    "fit_loss": arm.fit_loss,
                    "heldout_accuracy": arm.heldout_accuracy,
                    "epochs_run": arm.epochs_run,
                })
                print(json.dumps(rows[-1]), flush=True)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        f"{name}_backbone.json")
    write_json({"environment": result.environment, "rows": rows}, path)
    print("| arm | overrides | seed | eval/fit | eval/fit-mode | fit loss "
          "| held-out acc | run s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['overrides'] or 'demo defaults'} "
              f"| {r['seed']} | {r['eval_fit']:.3g} "
              f"| {r['eval_fit_mode']:.3g} | {r['fit_loss']:.3g} "
              f"| {r['heldout_accuracy']:.3f} | {r['run_seconds']} |")


if __name__ == "__main__":
    main(sys.argv[1])
