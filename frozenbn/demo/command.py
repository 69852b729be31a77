"""`frozenbn demo`: the scenario with the command line's choices.

`run_demo` is the one entry point of the demo for the command line: it
builds the scenario's config and data from plain arguments, runs it,
writes the results and prints the table and the verdict.
"""

import time
from typing import Optional

from frozenbn.demo import arms as arms_lib
from frozenbn.demo import images
from frozenbn.demo import results as results_lib
from frozenbn.demo import scenario


def run_demo(
    out: str = "frozenbn-demo",
    *,
    weights: str = "none",
    data: Optional[str] = None,
    epochs: Optional[int] = None,
    image_size: int = 32,
    batch_size: int = 32,
    seed: int = 0,
    arms: Optional[str] = None,
    quick: bool = False,
) -> scenario.ScenarioResult:
    """Runs the demo, writes `out/results.{json,md,png}`, prints the verdict.

    Args:
        out: Output folder.
        weights: `"none"`, `"imagenet"` or a ResNet50 weights file.
        data: Optional folder of the user's target images, one subfolder
            per class (two classes); `None` uses the shipped images.
        epochs: Maximum fine-tuning epochs; `None` for the default.
        image_size: Input side in pixels.
        batch_size: Batch size of fine-tuning, evaluation and the audit.
        seed: Seed of everything.
        arms: Comma-separated arm names; `None` for `arms.DEMO_ARMS`.
        quick: A check of the whole run in under a minute: a small ResNet
            (ResNet50 if `weights` are given), 128 images, 2 epochs, no
            source pretraining.

    Returns:
        The `ScenarioResult`.
    """
    start = time.perf_counter()
    names = _parse_arms(arms)
    config = _config(weights, epochs, image_size, batch_size, seed, quick)
    result = scenario.run_scenario(_data(data, image_size, seed), config,
                                   names, verbose=1)
    paths = results_lib.write_results(
        result, out, "results", title="frozenbn demo: fit vs evaluate"
    )
    print()
    print(result.table())
    print()
    print(results_lib.verdict(result))
    if config.backbone != "resnet50":
        print("This was --quick, a check of the whole run on a small network "
              "trained briefly: the BN gap of the scenario shows on "
              "ResNet50, in `frozenbn demo` without --quick.")
    print(f"wrote {', '.join(paths)} in {time.perf_counter() - start:.0f} s; "
          f"the curves: {paths[-1]}")
    return result


def _config(weights, epochs, image_size, batch_size, seed, quick):
    defaults = scenario.ScenarioConfig()
    weights = None if weights.lower() == "none" else weights
    return scenario.ScenarioConfig(
        image_size=image_size,
        weights=weights,
        backbone="small" if quick and weights is None else defaults.backbone,
        pretrain_epochs=0 if quick else defaults.pretrain_epochs,
        epochs=epochs or (2 if quick else defaults.epochs),
        head_epochs=1 if quick else defaults.head_epochs,
        batch_size=batch_size,
        seed=seed,
        max_source=128 if quick else None,
        max_target=128 if quick else None,
        deterministic=True,
    )


def _data(folder, image_size, seed):
    shipped = images.load_demo_data()
    if folder is None:
        return shipped
    x, y, names = images.load_image_folder(folder, image_size)
    if len(names) != 2:
        raise ValueError(
            f"the demo classifies two classes; {folder} has "
            f"{len(names)} class subfolder(s): {', '.join(names)}"
        )
    target = images.split_heldout(x, y, seed=seed)
    if len(target.heldout.x) == 0:
        raise ValueError(f"too few images in {folder} to hold some out")
    return images.DemoData(shipped.source, target)


def _parse_arms(text):
    if text is None:
        return arms_lib.DEMO_ARMS
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    unknown = [a for a in names if a not in arms_lib.ARMS]
    if unknown:
        raise ValueError(
            f"unknown arm(s) {', '.join(unknown)}; choose from "
            f"{', '.join(arms_lib.ARMS)}"
        )
    return names
