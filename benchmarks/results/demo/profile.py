"""Times the phases of `frozenbn demo`: `python profile.py SEED`.

Wraps the scenario's phases (pretraining, audit, each arm, measuring) and
every `fit` with timers, runs the demo with default arguments into a
temporary folder, and prints the total and the phases' seconds as JSON.
"""

import functools
import json
import sys
import tempfile
import time

import keras

from frozenbn.demo import command
from frozenbn.demo import scenario

TIMES = {}


def _timed(module, name):
    function = getattr(module, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        TIMES.setdefault(name, []).append(
            round(time.perf_counter() - start, 1))
        return result

    setattr(module, name, wrapper)


for phase in ("pretrained_backbone", "audit_backbone", "_train_arm",
              "_recalibrated_arm", "_measure"):
    _timed(scenario, phase)
_fit = keras.Model.fit


def _timed_fit(self, *args, **kwargs):
    start = time.perf_counter()
    result = _fit(self, *args, **kwargs)
    TIMES.setdefault("fit", []).append(
        (kwargs.get("epochs"), round(time.perf_counter() - start, 1)))
    return result


keras.Model.fit = _timed_fit

if __name__ == "__main__":
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        command.run_demo(out, seed=int(sys.argv[1]))
    print("TOTAL", round(time.perf_counter() - start, 1))
    print(json.dumps(TIMES))
