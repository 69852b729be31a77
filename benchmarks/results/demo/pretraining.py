"""Fewer source-pretraining epochs: `python pretraining.py EPOCHS SEED OUT.json`.

Runs the default demo's scenario (`frozenbn demo --seed SEED`: ResNet50
32x32, the three demo arms, per-epoch curves on) with the backbone
pretrained on the source domain for EPOCHS epochs instead of 4 (then, as
always, its statistics recalibrated on the source), and appends a row per
arm to OUT.json: the demo's conditions and the seconds of the scenario.
"""

import dataclasses
import json
import os
import sys
import time

from frozenbn.demo import arms as arms_lib
from frozenbn.demo import command
from frozenbn.demo import images
from frozenbn.demo import scenario


def main(epochs, seed, out):
    config = dataclasses.replace(
        command._config("none", None, 32, 32, seed, quick=False),
        pretrain_epochs=epochs)
    start = time.perf_counter()
    result = scenario.run_scenario(images.load_demo_data(), config,
                                   arms_lib.DEMO_ARMS, verbose=0)
    seconds = time.perf_counter() - start
    rows = []
    if os.path.exists(out):
        with open(out) as f:
            rows = json.load(f)["rows"]
    for arm in result.arms:
        rows.append({
            "pretrain_epochs": epochs, "seed": seed, "arm": arm.name,
            "eval_fit": arm.ratio, "eval_fit_mode": arm.statistics_ratio,
            "fit_loss": arm.fit_loss, "heldout_accuracy":
            arm.heldout_accuracy, "epochs_run": arm.epochs_run,
            "scenario_s": round(seconds, 1),
            "source_train_accuracy": result.data["source_train_accuracy"],
        })
        print(json.dumps(rows[-1]), flush=True)
    with open(out, "w") as f:
        json.dump({"environment": result.environment, "rows": rows}, f,
                  indent=1)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
