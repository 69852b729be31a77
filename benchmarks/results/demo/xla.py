"""Would XLA make the demo's epochs faster on a CPU? `python xla.py`.

Keras compiles with XLA on JAX, and on TensorFlow only where a GPU is
found (`jit_compile="auto"`), so the demo's TensorFlow fine-tuning runs
without it on a CPU. For `jit_compile` False and True, in turn and twice,
a new process prepares the demo's backbone (ResNet50 32x32, 2 classes) the
way `training.compile_model` does, then times a first epoch of `fit` on the
demo's 256 target training images at batch 32 (it traces the step), four
more epochs, and one `evaluate` of the same images. The rows go to
`xla_BACKEND.json` beside this file.
"""

import json
import os
import subprocess
import sys
import time

REPEATS = 2


def measure(jit_compile):
    import keras

    from frozenbn.demo import images

    keras.utils.set_random_seed(0)
    train = images.load_demo_data().target.train
    x, y = train.x.astype("float32") / 255.0, train.y
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3),
                                        classes=2)
    loss = "sparse_categorical_crossentropy"
    start = time.perf_counter()
    # training.compile_model, with `jit_compile` passed to `compile`.
    model.compile(keras.optimizers.Adam(1e-5), loss, metrics=["accuracy"],
                  jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)
    model.evaluate(x[:32], y[:32], batch_size=32, verbose=0)
    prepare = time.perf_counter() - start

    def timed(call):
        start = time.perf_counter()
        call()
        return round(time.perf_counter() - start, 2)

    def epoch():
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)

    first = timed(epoch)
    epochs = [timed(epoch) for _ in range(4)]
    evaluate = timed(lambda: model.evaluate(x, y, batch_size=32, verbose=0))
    return {"jit_compile": jit_compile, "prepare_seconds": round(prepare, 2),
            "first_epoch_seconds": first, "epoch_seconds": epochs,
            "evaluate_seconds": evaluate}


def main():
    from frozenbn._report import write_json
    from frozenbn.demo import machine

    rows = []
    for _ in range(REPEATS):
        for jit_compile in ("False", "True"):
            out = subprocess.run([sys.executable, __file__, jit_compile],
                                 check=True, capture_output=True,
                                 text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    environment = machine.environment_info()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        f"xla_{environment['backend']}.json")
    write_json({"environment": environment, "rows": rows}, path)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(json.dumps(measure(sys.argv[1] == "True")))
    else:
        main()
