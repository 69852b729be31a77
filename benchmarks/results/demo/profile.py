"""Times the phases of `frozenbn demo`: `python profile.py SEED [OUT.json]`.

Wraps the scenario's phases (pretraining, audit, each arm, measuring) and
the calls inside them (`fit`, `compile_model`, the per-epoch evaluation of
the curves, `evaluate`, `predict`, the fit-mode loss, `save`, `load_model`,
`recalibrate`) with timers, runs the demo with default arguments into a
temporary folder, and prints the total and each call's seconds, in call
order, as JSON (also written to OUT.json when given).
"""

import functools
import json
import sys
import tempfile
import time

import keras

import frozenbn.recalibrate  # noqa: F401  (the module, below)
from frozenbn.demo import command
from frozenbn.demo import scenario
from frozenbn.demo import training

TIMES = {}


def _timed(owner, name, key=None):
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        TIMES.setdefault(key or name, []).append(
            round(time.perf_counter() - start, 1))
        return result

    setattr(owner, name, wrapper)


for phase in ("pretrained_backbone", "audit_backbone", "_train_arm",
              "_recalibrated_arm", "_measure", "_evaluate"):
    _timed(scenario, phase)
_timed(training, "compile_model")
_timed(training, "fit_mode_loss")
_timed(training.EvaluateOnTrainingData, "on_epoch_end", "curve_evaluate")
# `frozenbn.recalibrate` is the function; the scenario imports it from its
# module when it runs.
_timed(sys.modules["frozenbn.recalibrate"], "recalibrate")
for method in ("fit", "predict", "save"):
    _timed(keras.Model, method)
_timed(keras.models, "load_model")

if __name__ == "__main__":
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        command.run_demo(out, seed=int(sys.argv[1]))
    record = {"seed": int(sys.argv[1]), "backend": keras.backend.backend(),
              "total_s": round(time.perf_counter() - start, 1),
              "seconds": TIMES}
    print(json.dumps(record))
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as file:
            json.dump(record, file, indent=1)
