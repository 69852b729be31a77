"""The demo's conditions after every epoch: `python epochs.py SEED OUT.json [ARMS]`.

Runs the default scenario (ResNet50 32x32, TensorFlow, no per-epoch curves)
and trains each arm in ARMS (default `stock,frozenbn_guide`) for the demo's
12 epochs. After every epoch it records the epoch's `fit` loss, `evaluate`'s
loss on the training data and the held-out accuracy; for `stock` also the
same for a recalibrated copy and its fit-mode loss. The demo keeps one
checkpoint per arm; these rows show how its conditions move from epoch to
epoch. Prints a row per epoch and writes everything to OUT.json.
"""

import json
import sys
import time

import keras

from frozenbn.demo import arms as arms_lib
from frozenbn.demo import images
from frozenbn.demo import scenario
from frozenbn.demo import training
from frozenbn.recalibrate import recalibrate


def main(seed, out, arm_names):
    config = scenario.ScenarioConfig(seed=seed, curves=False)
    start = time.perf_counter()
    source, target, _ = scenario.prepare_data(images.load_demo_data(), config)
    backbone, _ = scenario.pretrained_backbone(config, source)
    record = {"seed": seed, "config": vars(config),
              "pretrain_s": time.perf_counter() - start, "arms": {}}
    for name in arm_names:
        start = time.perf_counter()
        head, rows = _train(arms_lib.ARMS[name], backbone, target, config)
        record["arms"][name] = {"head": head, "epochs": rows,
                                "total_s": time.perf_counter() - start}
        with open(out, "w") as f:
            json.dump(record, f, indent=1)


def _train(arm, backbone, target, config):
    (x, y), batch_size = target.train, config.batch_size
    keras.utils.set_random_seed(config.seed)
    arm_backbone = keras.models.clone_model(backbone)
    arm_backbone.set_weights(backbone.get_weights())
    if arm.prepare is not None:
        arm_backbone = arm.prepare(arm_backbone, x)
    model = training.build_classifier(arm_backbone, config.seed)
    head = {}
    if arm.head_first:  # as scenario._train_arm: Keras's two-phase recipe
        arm_backbone.trainable = False
        scenario._compile(model, config.learning_rate, x, y, batch_size)
        keras.utils.set_random_seed(config.seed)
        history = model.fit(x, y, batch_size=batch_size,
                            epochs=config.head_epochs, verbose=0).history
        head = {"loss": history["loss"],
                "heldout": _evaluate(model, target.heldout, batch_size)[1]}
        arm_backbone.trainable = True
    rate = config.frozen_learning_rate if arm.frozen_lr else config.learning_rate
    scenario._compile(model, rate, x, y, batch_size)
    measure = _EveryEpoch(target, batch_size, recalibrated=arm.name == "stock")
    keras.utils.set_random_seed(config.seed)
    model.fit(x, y, batch_size=batch_size, epochs=config.epochs, verbose=0,
              callbacks=[measure])
    return head, measure.rows


def _evaluate(model, split, batch_size):
    scores = scenario._evaluate(model, split, batch_size)
    return scores["loss"], scores["accuracy"]


class _EveryEpoch(keras.callbacks.Callback):
    def __init__(self, target, batch_size, recalibrated):
        super().__init__()
        self.target, self.batch_size = target, batch_size
        self.recalibrated, self.rows, self.start = recalibrated, [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "fit_loss": float(logs["loss"]),
               "train_s": time.perf_counter() - self.start}
        train, heldout = self.target.train, self.target.heldout
        row["eval_loss"] = _evaluate(self.model, train, self.batch_size)[0]
        row["heldout"] = _evaluate(self.model, heldout, self.batch_size)[1]
        if self.recalibrated:
            copy = keras.models.clone_model(self.model)
            copy.set_weights(self.model.get_weights())
            copy.compile(loss="binary_crossentropy", metrics=["accuracy"])
            recalibrate(copy, train.x, verbose=0, batch_size=self.batch_size)
            row["recal_eval_loss"] = _evaluate(copy, train, self.batch_size)[0]
            row["recal_heldout"] = _evaluate(copy, heldout, self.batch_size)[1]
            row["recal_fit_mode"] = training.fit_mode_loss(
                copy, *train, batch_size=self.batch_size)
        print(row, flush=True)
        self.rows.append(row)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2],
         (sys.argv[3] if len(sys.argv) > 3 else "stock,frozenbn_guide").split(","))
