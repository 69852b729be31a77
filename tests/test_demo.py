"""Tests of the demo data, the fit-vs-evaluate scenario and `frozenbn demo`.

The scenario tests train ResNet50 (32x32, a few hundred images): about a
minute per trained arm on a 2-core CPU.
"""

import json
import os

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.cli import main
from frozenbn.demo import arms as demo_arms
from frozenbn.demo import command
from frozenbn.demo import images as demo_images
from frozenbn.demo import results as demo_results
from frozenbn.demo import scenario
from frozenbn.demo import training
from frozenbn import _images
from tests import testing


# How far stock's evaluate() is from its fit() in the scenario varies from
# run to run: the 5-seed benchmark measured 7.8 to 7.5e4 (benchmarks/results/
# gap_small_tensorflow_cpu.json), but a CI run of seed 0 measured 1.29
# (evaluate 0.274, fit 0.212, held-out 0.826): TensorFlow's CPU kernels are
# not bit-reproducible and stock's gap depends on how far the moving
# statistics lag at the checkpointed epoch. The test asserts what holds on
# every run; the size of the gap is the benchmark's to report.


def _write_folder(root, sizes=((20, 30), (40, 40)), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("class_a", "class_b")):
        os.makedirs(root / name)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            pixels[..., label] = 255  # a class-dependent color
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_load_demo_data_shapes_and_balance():
    data = demo_images.load_demo_data()
    for domain in data:
        for split in domain:
            assert split.x.dtype == np.uint8 and split.y.dtype == np.uint8
            assert split.x.shape[1:] == (32, 32, 3)
            assert len(split.x) == len(split.y) > 0
    # Source: digits 0-9 over pictures, every digit present.
    counts = np.bincount(data.source.train.y)
    assert len(counts) == 10 and counts.min() >= 40, counts
    assert (len(data.source.train.x), len(data.source.heldout.x)) == (768, 128)
    # Target: imbalanced 3:1 for training, balanced held out, disjoint.
    assert np.bincount(data.target.train.y).tolist() == [192, 64]
    assert np.bincount(data.target.heldout.y).tolist() == [256, 256]
    train = {x.tobytes() for x in data.target.train.x}
    assert not any(x.tobytes() in train for x in data.target.heldout.x)


def test_build_demo_data_is_deterministic(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    sizes = dict(source_train=12, source_heldout=12, target_train=(6, 2),
                 target_heldout=4)
    path = tmp_path / "d.npz"
    built = demo_images.build_demo_data(str(path), **sizes)
    again = demo_images.build_demo_data(None, **sizes)
    loaded = demo_images.load_demo_data(str(path))
    for a, b in zip(built.target.train, loaded.target.train):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(built.source.heldout.x,
                                  again.source.heldout.x)
    assert np.bincount(built.target.train.y).tolist() == [6, 2]


def test_oversample_balances_and_keeps_every_image():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    y = np.array([0] * 7 + [1] * 3, np.uint8)
    split = demo_images.oversample(demo_images.Split(x, y), seed=3)
    assert np.bincount(split.y).tolist() == [7, 7]
    assert set(split.x.ravel()) == set(range(10))
    np.testing.assert_array_equal(split.y, (split.x.ravel() >= 7))
    again = demo_images.oversample(demo_images.Split(x, y), seed=3)
    np.testing.assert_array_equal(split.x, again.x)


def test_load_image_folder(tmp_path):
    root = _write_folder(tmp_path / "imgs")
    x, y, names = demo_images.load_image_folder(str(root), 16)
    assert names == ["class_a", "class_b"]
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    assert x[y == 0][..., 0].min() == 255 and x[y == 1][..., 1].min() == 255
    domain = demo_images.split_heldout(x, y, fraction=0.34)
    assert len(domain.train.x) == 4 and len(domain.heldout.x) == 2
    assert sorted(domain.heldout.y) == [0, 1]


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        demo_images.load_image_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="No class subfolders"):
        demo_images.load_image_folder(str(tmp_path))
    os.makedirs(tmp_path / "a")
    with pytest.raises(ValueError, match="No images found"):
        demo_images.load_image_folder(str(tmp_path))


def test_frozen_warmup_raises_the_rate_linearly_then_holds_it():
    """`frozen_warmup_epochs` compiles Adam with a rate that rises from 0 to
    the arm's over the warm-up steps and stays there; without it the rate
    is the constant one."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    scenario._compile(model, 1e-4, x, y, batch_size=1, warmup_epochs=1)
    rates = []
    for _ in range(6):
        rates.append(float(keras.ops.convert_to_numpy(
            model.optimizer.learning_rate)))
        model.train_on_batch(x, y)
    np.testing.assert_allclose(rates, [0, 2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4],
                               rtol=1e-6, atol=1e-12)
    scenario._compile(model, 1e-4, x, y, batch_size=1)
    assert float(keras.ops.convert_to_numpy(
        model.optimizer.learning_rate)) == pytest.approx(1e-4)


def test_unknown_and_misordered_arms():
    with pytest.raises(ValueError, match="Unknown arm"):
        scenario.run_scenario(None, arms=("nope",))
    with pytest.raises(ValueError, match="list 'stock' before it"):
        scenario.run_scenario(None, arms=("stock_recalibrated", "stock"))


SCENARIO = dict(curves=False)
"""The scenario test's size: the demo's own (4 source epochs on 768 images,
up to 12 epochs on the 256 target images, 384 once oversampled, 512 held
out), without the per-epoch curves. Smaller sizes do not test the recipe:
at 2 source epochs and 6 target epochs the frozen arm reached 0.695 and
0.635 held-out (seeds 0, 1), at Adam 1e-5 it needs its epochs."""


@pytest.mark.full
@testing.requires_backend(
    "tensorflow", reason="trains ResNet50 three times per seed (about 5 "
    "minutes on a 2-core CPU); the demo's code is backend-agnostic and "
    "test_demo_quick_writes_results runs it on every backend")
@pytest.mark.parametrize("seed", [0, 1])
def test_scenario_each_remedy_learns(tmp_path, seed):
    """The core issue, at the demo's size, on two seeds: each remedy the
    README recommends agrees with fit() AND learns (held-out accuracy
    clearly above chance, not a constant predictor), and recalibrating
    stock's statistics lowers its evaluate() loss on its own training
    batches. Each arm is measured with its best checkpoint's weights loaded
    back from disk; the recalibrated one after a `.keras` save and a plain
    `keras.models.load_model`.
    """
    config = scenario.ScenarioConfig(**SCENARIO, seed=seed)
    arms = ("stock", "stock_recalibrated", "frozenbn")
    result = scenario.run_scenario(
        demo_images.load_demo_data(), config, arms,
        checkpoint_dir=str(tmp_path), verbose=0,
    )
    table = result.table()
    stock = result.arm("stock")
    assert result.arm("stock_recalibrated").eval_loss < stock.eval_loss, table
    for name in arms[1:]:
        arm = result.arm(name)
        assert arm.ratio <= 1.5, table
        # The same weights as fit normalizes them: the statistics' part.
        assert arm.statistics_ratio <= 1.5, table
        # Chance is 0.5 (balanced held-out digits).
        assert arm.heldout_accuracy >= 0.65, table
        assert not arm.constant, table
    assert result.arm("frozenbn").statistics_ratio == pytest.approx(
        1.0, rel=1e-4), table
    assert os.path.isfile(tmp_path / "frozenbn.weights.h5")
    assert os.path.isfile(tmp_path / "stock_recalibrated.keras")
    if seed == 0:
        _check_audit_reads_the_gap(str(tmp_path / "stock.keras"))


def _check_audit_reads_the_gap(path):
    """`audit` on the stock checkpoint of the scenario follows what it
    measures: with the gap (ratio above `_advice.GAP_RATIO`) it recommends
    recalibrating because evaluate does not match fit, and what it ranks is
    what `recalibrate` fixes: after recalibrating every layer the worst
    score falls and the gap closes; recalibrating only the five worst-ranked
    layers lowers the inference loss too. Without the gap, it does not claim
    one.

    The ranking is each layer's own drift (upstream layers as in `fit`), not
    its share of the gap: recalibrating a layer changes what the layers
    downstream receive. docs/usage.md says so; this checks what holds."""
    from frozenbn import _advice

    target = demo_images.load_demo_data().target.train
    x = _images.preprocess(target.x, "caffe", 32)
    y = target.y.astype("float32")
    report = frozenbn.audit(keras.models.load_model(path), (x, y),
                            batch_size=16)
    if report.ratio <= _advice.GAP_RATIO:
        assert "evaluate does not match fit" not in str(report)
        return
    assert report.recommendation.remedy == "recalibrate", str(report)
    assert "evaluate does not match fit" in report.recommendation.reason
    names = [layer.name for layer in report.layers]
    assert len(names) == 53

    model = keras.models.load_model(path)
    frozenbn.recalibrate(model, x, verbose=0)
    after = frozenbn.audit(model, (x, y), batch_size=16, verbose=0)
    # What stays is the batch statistics' own noise at batch 16.
    assert after.layers[0].score < 0.75 * report.layers[0].score, (
        str(report), str(after))
    assert after.ratio <= 1.5, str(after)

    worst_five = set(names[:5])
    model = keras.models.load_model(path)
    frozenbn.recalibrate(model, x, include=lambda layer: layer.name in
                         worst_five, verbose=0)
    worst = model.evaluate(x, y, verbose=0)[0]
    assert worst < report.inference_loss, (worst, str(report))


def test_demo_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "evaluate loss" in printed and "held-out acc" in printed
    assert "audit of the pretrained backbone on the target: " in printed
    assert "audit of the pretrained backbone said " in printed
    assert demo_results.RATIOS_EXPLAINED in printed
    assert "This was --quick" in printed
    assert printed.rstrip().endswith(f"the curves: {out / 'results.png'}")
    for name in ("results.json", "results.md", "results.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    arms = {arm["name"]: arm for arm in results["arms"]}
    assert list(arms) == list(demo_arms.DEMO_ARMS)
    assert results["environment"]["backend"]
    assert results["config"]["deterministic"] is True
    assert results["config"]["backbone"] == "small"
    assert "a small ResNet 32x32" in (out / "results.md").read_text()
    # The scenario's own CPU time (not the worker process's since it
    # started): some, and no more than every core for its whole run.
    assert 0 < results["cpu_seconds"] <= results["seconds"] * os.cpu_count()
    # Recalibrated (exact) or frozen statistics: these two agree with fit()
    # at any size.
    assert arms["stock_recalibrated"]["ratio"] <= 1.5
    assert arms["frozenbn"]["ratio"] <= 1.5
    # Frozen statistics: fit's normalization is evaluate's, so with the
    # same weights and no Dropout the two losses are one number (Keras's
    # BN trainable=False arm: test_keras_guide_trap).
    assert arms["frozenbn"]["statistics_ratio"] == pytest.approx(
        1.0, rel=1e-4), arms["frozenbn"]
    assert np.isfinite(arms["stock"]["statistics_ratio"])
    assert "eval/fit-mode" in (out / "results.md").read_text()
    assert len(arms["stock"]["curves"]["eval_loss"]) == arms["stock"][
        "epochs_run"]
    assert "| arm |" in (out / "results.md").read_text()


def test_backbones():
    """The scenario's backbones: ResNet50 (53 BN layers), the small
    residual network of --quick (9) and a half-width ResNet-18 (20); the
    residual networks take no weights."""
    for architecture, count, channels, side in (
            ("resnet50", 53, 2048, 1), ("small", 9, 64, 8),
            ("medium", 20, 256, 4)):
        backbone = training.build_backbone(None, 32, architecture)
        assert len(testing.layers_of(
            backbone, keras.layers.BatchNormalization)) == count
        assert backbone.output_shape == (None, side, side, channels)
    with pytest.raises(ValueError, match="weights are for ResNet50; the "
                       "'medium' backbone takes weights=None"):
        training.build_backbone("imagenet", 32, "medium")
    with pytest.raises(ValueError, match="architecture must be one of "
                       r"\('resnet50', 'small', 'medium'\), got 'vgg'"):
        training.build_backbone(None, 32, "vgg")


def test_quick_runs_the_small_backbone_unless_weights_are_given():
    config = command._config("none", None, 32, 32, 0, quick=True)
    assert (config.backbone, config.epochs, config.max_target) == (
        "small", 2, 128)
    config = command._config("w.h5", None, 32, 32, 0, quick=True)
    assert (config.backbone, config.weights) == ("resnet50", "w.h5")
    assert command._config("none", None, 32, 32, 0, quick=False).backbone == (
        "resnet50")


def _committed_gap_run(name, seed):
    (run,) = [r for r in testing.committed_result(name)["runs"]
              if r["config"]["seed"] == seed]
    return demo_results.ScenarioResult.from_dict(run)


def test_verdict_says_how_the_remedy_audit_recommended_did():
    """The demo's last verdict line: the arm of audit's remedy against the
    best arm, from committed gap runs at batch 4 and 32."""
    run = _committed_gap_run("gap_small_batch4_tensorflow_cpu.json", 0)
    assert run.audit["max_score"] > 1.5
    last = demo_results.verdict(run).splitlines()[-1]
    assert last == (
        "- audit of the pretrained backbone said freeze: frozenbn.convert "
        "(frozen), held-out 0.822, 0.023 below the best arm (Keras, BN "
        "trainable=False, 0.846).")
    run = _committed_gap_run("gap_small_tensorflow_cpu.json", 0)
    last = demo_results.verdict(run).splitlines()[-1]
    assert last == (
        "- audit of the pretrained backbone said recalibrate: Keras stock + "
        "frozenbn.recalibrate, held-out 0.881, the best arm.")
    run.arms = [a for a in run.arms if a.name != "stock_recalibrated"]
    assert demo_results.verdict(run).endswith(
        "said recalibrate (arm 'stock_recalibrated' did not run).")


def _bn_dropout_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    hidden = keras.layers.Dropout(0.5, name="dropout")(hidden)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="out")(hidden)
    return keras.Model(inputs, outputs)


def _bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_fit_mode_loss_normalizes_each_batch_without_dropout():
    """`fit_mode_loss` scores the weights with each batch's statistics (as
    `fit` normalizes a stock BN) and Dropout off, computed here in NumPy;
    it leaves the moving statistics and the Dropout rate as they were; on a
    frozen model it equals `evaluate`."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (40, 3)).astype("float32")
    y = (x[:, 0] > 3.0).astype("float32")
    model = _bn_dropout_model()
    keras.utils.set_random_seed(0)
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    before = [testing.to_numpy(v) for v in model.non_trainable_variables]

    loss = training.fit_mode_loss(model, x, y, batch_size=16)

    w = {name: [testing.to_numpy(v) for v in model.get_layer(name).weights]
         for name in ("dense", "bn", "out")}
    gamma, beta = w["bn"][0], w["bn"][1]
    expected = []
    for start in range(0, 40, 16):  # batches of 16, 16 and 8
        h = x[start:start + 16] @ w["dense"][0] + w["dense"][1]
        h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-3) * gamma + beta
        p = 1 / (1 + np.exp(-(h @ w["out"][0] + w["out"][1])))
        expected.append(_bce(y[start:start + 16], p[:, 0]))
    np.testing.assert_allclose(loss, np.concatenate(expected).mean(),
                               rtol=1e-5)
    for value, variable in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(testing.to_numpy(variable), value)
    assert model.get_layer("dropout").rate == 0.5
    evaluated = model.evaluate(x, y, batch_size=16, verbose=0)
    assert abs(evaluated - loss) > 0.01 * loss  # moving != batch statistics

    frozen = frozenbn.convert(model)
    frozen.compile("adam", "binary_crossentropy")
    np.testing.assert_allclose(
        training.fit_mode_loss(frozen, x, y, batch_size=16),
        frozen.evaluate(x, y, batch_size=16, verbose=0), rtol=1e-5)


def test_compile_model_creates_the_variables_fit_would():
    """`compile_model` builds the optimizer and the metrics before `fit`
    without training: the weights stay, and `fit` after it logs the same
    losses and ends at the same weights as after a plain `compile` (batches
    in order and no Dropout: on JAX and torch the random stream shifts)."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (40, 3)).astype("float32")
    y = (x[:, 0] > 3.0).astype("float32")
    runs = []
    for prepare in ("compile", "compile_model"):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        hidden = keras.layers.BatchNormalization()(
            keras.layers.Dense(4)(inputs))
        model = keras.Model(inputs,
                            keras.layers.Dense(1, "sigmoid")(hidden))
        weights = [testing.to_numpy(v) for v in model.variables]
        optimizer = keras.optimizers.Adam(1e-2)
        if prepare == "compile":
            model.compile(optimizer, "binary_crossentropy",
                          metrics=["accuracy"])
        else:
            training.compile_model(model, optimizer, "binary_crossentropy",
                                   x, y, batch_size=8)
            assert model.optimizer.built
            assert len(model.optimizer.variables) == 2 + 2 * len(
                model.trainable_variables)  # iterations, rate, Adam's slots
            assert len(model.metrics_variables) == 4  # loss, accuracy
            for before, variable in zip(weights, model.variables):
                np.testing.assert_array_equal(testing.to_numpy(variable),
                                              before)
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0,
                            shuffle=False).history
        runs.append((history, [testing.to_numpy(v) for v in model.weights]))
    (plain, plain_weights), (built, built_weights) = runs
    np.testing.assert_allclose(built["loss"], plain["loss"], rtol=1e-6)
    np.testing.assert_allclose(built["accuracy"], plain["accuracy"])
    for a, b in zip(built_weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_progress_ends_where_early_stopping_ended(capsys):
    """The epoch bar of an arm that early stopping ends after 3 of 12
    epochs closes at "3/12", not at an epoch that never ran."""
    x = np.zeros((8, 2), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    progress = training.Progress(12, verbose=1)
    model.fit(x, x[:, :1], epochs=12, verbose=0, callbacks=[
        keras.callbacks.EarlyStopping(monitor="loss", patience=2),
        progress])
    printed = capsys.readouterr().out
    assert progress.epochs_done == 3  # loss 0 from the first epoch on
    assert " 3/12" in printed and "12/12" not in printed
    assert printed.endswith("\n")


def _small_backbone():
    inner = keras.Sequential([
        keras.Input((8, 8, 4)),
        keras.layers.Conv2D(4, 1),
        keras.layers.BatchNormalization(),
    ], name="inner")
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.BatchNormalization(),
        inner,
    ])


def test_same_seed_same_pretrained_backbone():
    """The seed covers the backbone's initial weights: two runs with the
    same seed start fine-tuning from the same backbone, another seed from
    another one."""
    def backbone(seed, before):
        config = scenario.ScenarioConfig(backbone="small", pretrain_epochs=0,
                                         max_source=64, seed=seed)
        source, _, _ = scenario.prepare_data(demo_images.load_demo_data(),
                                             config)
        keras.utils.set_random_seed(before)  # whatever ran before
        return scenario.pretrained_backbone(config, source)[0].get_weights()

    first, again, other = backbone(0, 7), backbone(0, 8), backbone(1, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_arm_preparations():
    x = np.random.default_rng(0).normal(3.0, 1.0, (16, 8, 8, 3))
    backbone = demo_arms.ARMS["keras_backbone_frozen"].prepare(
        _small_backbone(), x)
    assert not backbone.trainable_weights

    # Keras BN trainable=False reaches nested models too, and nothing else.
    backbone = demo_arms.ARMS["keras_bn_frozen"].prepare(
        _small_backbone(), x)
    bns = [l for l in frozenbn._keras_private.iter_layers(backbone)
           if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 2 and not any(bn.trainable for bn in bns)
    assert backbone.layers[0].trainable and backbone.layers[2].layers[0].trainable
    # ... and the guide's `backbone.trainable = False`, then `= True`
    # silently undoes it, while frozenbn's freeze survives.
    backbone.trainable = False
    backbone.trainable = True
    assert all(bn.trainable for bn in bns)
    converted = demo_arms.ARMS["frozenbn"].prepare(_small_backbone(), x)
    converted.trainable = False
    converted.trainable = True
    bns = [l for l in frozenbn._keras_private.iter_layers(converted)
           if isinstance(l, frozenbn.BatchNormalization)]
    assert len(bns) == 2 and all(bn.frozen and bn.trainable for bn in bns)

    original = _small_backbone()
    backbone = demo_arms.ARMS["frozenbn_recalibrated"].prepare(original, x)
    bn = backbone.layers[1]
    assert isinstance(bn, frozenbn.BatchNormalization) and bn.frozen
    assert not np.allclose(keras.ops.convert_to_numpy(bn.moving_mean), 0.0)
    assert demo_arms.ARMS["keras_guide"].head_first
    assert demo_arms.ARMS["stock_recalibrated"].derived_from == "stock"


@testing.full_tier_unless("tensorflow")
def test_user_folder_and_local_weights_file_end_to_end(tmp_path, capsys):
    """The real loading paths, offline: a user's image folder and a local
    ResNet50 weights file (what `weights="imagenet"` reads from Keras's
    cache), through `frozenbn demo`."""
    backbone = training.build_backbone(None, 32)
    testing.randomize_batch_norm(backbone)
    weights = tmp_path / "resnet50.weights.h5"
    backbone.save_weights(weights)
    loaded = training.build_backbone(str(weights), 32)
    testing.assert_weights_equal(backbone, loaded)

    folder = _write_folder(tmp_path / "photos", per_class=8)
    out = tmp_path / "demo"
    code = main([
        "demo", "--quick", "--data", str(folder), "--weights", str(weights),
        "--arms", "stock", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["weights"] == str(weights)
    assert results["data"]["target_train"] + results["data"]["target_heldout"] == 16


def test_keras_guide_trap():
    """Keras's transfer-learning recipe on the bug report's Sequential model:
    BN `trainable=False`, `backbone.trainable = False` to train the head,
    then `backbone.trainable = True` to fine-tune. The last step silently
    puts Keras's BN layers back on batch statistics, so `fit` and
    `evaluate` compute different functions again (measured with `audit`);
    frozenbn's `frozen=True` survives it and they stay equal."""
    x = np.random.default_rng(0).normal(3.0, 2.0, (32, 8, 8, 3))
    y = (x[:, 0, 0, :1] > 3.0).astype("float32")
    results = {}
    for name in ("keras_bn_frozen", "frozenbn"):
        backbone = demo_arms.ARMS[name].prepare(_small_backbone(), x)
        model = keras.Sequential([
            keras.Input((8, 8, 3)), backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ])
        before = frozenbn.audit(model, (x, y), loss="binary_crossentropy")
        # The demo's eval/fit-mode of a frozen arm: one number, as measured.
        model.compile(loss="binary_crossentropy")
        assert training.fit_mode_loss(model, x, y[:, 0]) == pytest.approx(
            model.evaluate(x, y, verbose=0), rel=1e-4), name
        backbone.trainable = False
        backbone.trainable = True
        after = frozenbn.audit(model, (x, y), loss="binary_crossentropy")
        results[name] = (before, after)
    keras_before, keras_after = results["keras_bn_frozen"]
    assert not any(a.batch_statistics_in_fit for a in keras_before.layers)
    assert keras_before.max_output_diff == 0.0
    assert all(a.batch_statistics_in_fit for a in keras_after.layers)
    assert keras_after.max_output_diff > 0.01, str(keras_after)
    assert keras_after.ratio != pytest.approx(1.0, abs=1e-3)
    for report in results["frozenbn"]:
        assert not any(a.batch_statistics_in_fit for a in report.layers)
        assert report.max_output_diff == 0.0
        assert report.ratio == pytest.approx(1.0, abs=1e-6)
