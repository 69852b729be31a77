"""How often `fit` traces ResNet50's step: `python trace_once.py`.

TensorFlow traces a step again when its first trace created variables. A
plain `compile` leaves Adam's slots and the accuracy metric's totals to the
first trace of `fit`'s step; the demo's `training.compile_model` creates
them first. For each way of preparing a ResNet50 (32x32, 2 classes), a new
process times a first `fit` of two batches of 32 and counts the traces of
`train_step`; the rows go to `trace_once_BACKEND.json` beside this file.
"""

import json
import os
import subprocess
import sys
import time

WAYS = ("compile", "compile, optimizer built", "training.compile_model")


def measure(way):
    import keras
    import numpy as np

    from frozenbn.demo import training

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3),
                                        classes=2)
    x = np.random.default_rng(0).random((64, 32, 32, 3), "float32")
    y = np.arange(64) % 2
    loss = "sparse_categorical_crossentropy"
    prepare_start = time.perf_counter()
    if way == "training.compile_model":
        training.compile_model(model, keras.optimizers.Adam(1e-3), loss, x,
                               y, batch_size=32)
    else:
        model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
        if way == "compile, optimizer built":
            model.optimizer.build(model.trainable_variables)
    prepare = time.perf_counter() - prepare_start
    traces = []
    train_step = type(model).train_step

    def counted(self, *args):
        traces.append(1)
        return train_step(self, *args)

    type(model).train_step = counted
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return {"way": way, "prepare_seconds": round(prepare, 2),
            "first_fit_seconds": round(first, 2),
            "second_fit_seconds": round(time.perf_counter() - start, 2),
            "train_step_traces": len(traces)}


def main():
    from frozenbn._report import write_json
    from frozenbn.demo import machine

    rows = []
    for way in WAYS:
        out = subprocess.run([sys.executable, __file__, way], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    environment = machine.environment_info()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        f"trace_once_{environment['backend']}.json")
    write_json({"environment": environment, "rows": rows}, path)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1])))
    else:
        main()
