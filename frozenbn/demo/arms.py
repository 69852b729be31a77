"""The arms of the scenario: ways of handling BatchNormalization in fine-tuning.

Each `Arm` says how a copy of the pretrained backbone is prepared before the
head is put on, which learning rate it trains at, and whether the head is
first trained alone on the frozen backbone (the two-phase recipe of Keras's
transfer-learning guide). `ARMS` holds every arm by name; `DEMO_ARMS` are
the ones `frozenbn demo` runs: stock Keras and the remedies the README
recommends.
"""

import dataclasses
from typing import Callable
from typing import Optional

import keras

from frozenbn import Recommendation
from frozenbn.demo import training


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way of fine-tuning.

    Attributes:
        name: Short identifier, used in file names and JSON.
        label: Human-readable description, used in tables and plots.
        frozen_lr: Whether the backbone trains at the scenario's
            `frozen_learning_rate` (arms with fixed statistics) instead of
            its `learning_rate`.
        prepare: `prepare(backbone, x_train) -> backbone`, run on a copy of
            the pretrained backbone before the head is put on.
        head_first: Whether the head is first trained alone for
            `head_epochs` (backbone `trainable=False`), then the backbone
            is set `trainable=True` again, as Keras's guide does.
        derived_from: For arms that change another arm's checkpoint
            after training (recalibration) instead of training their own.
    """

    name: str
    label: str
    frozen_lr: bool = False
    prepare: Optional[Callable] = None
    head_first: bool = False
    derived_from: Optional[str] = None


def freeze_backbone(backbone: keras.Model, x_train=None) -> keras.Model:
    """Keras: the whole backbone `trainable=False` (only the head trains)."""
    backbone.trainable = False
    return backbone


def freeze_keras_batch_norm(
    backbone: keras.Model, x_train=None
) -> keras.Model:
    """Keras: every BN layer, nested ones included, `trainable=False`.

    In Keras 3 a BN layer with `trainable=False` runs in inference mode
    (moving statistics) and its gamma/beta do not train. Setting
    `backbone.trainable = True` afterwards undoes it for every layer.
    """
    for layer in training.keras_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return backbone


def convert_frozen(backbone: keras.Model, x_train=None) -> keras.Model:
    """frozenbn: `convert` with frozen statistics (the source domain's)."""
    from frozenbn.convert import convert

    return convert(backbone)


def recalibrate_then_convert(backbone: keras.Model, x_train) -> keras.Model:
    """frozenbn: statistics of the target domain (AdaBN), then frozen."""
    from frozenbn.recalibrate import recalibrate

    recalibrate(backbone, x_train, verbose=0)
    return convert_frozen(backbone)


ARMS = {
    arm.name: arm
    for arm in (
        Arm("stock", "Keras, stock BN"),
        Arm("keras_backbone_frozen", "Keras, backbone trainable=False",
            prepare=freeze_backbone),
        Arm("keras_bn_frozen", "Keras, BN trainable=False", frozen_lr=True,
            prepare=freeze_keras_batch_norm),
        Arm("frozenbn", "frozenbn.convert (frozen)", frozen_lr=True,
            prepare=convert_frozen),
        Arm("frozenbn_recalibrated", "frozenbn recalibrate, then convert",
            frozen_lr=True, prepare=recalibrate_then_convert),
        Arm("stock_recalibrated", "Keras stock + frozenbn.recalibrate",
            derived_from="stock"),
        Arm("keras_guide", "Keras guide: head, then backbone.trainable=True",
            frozen_lr=True, prepare=freeze_keras_batch_norm,
            head_first=True),
        Arm("frozenbn_guide", "frozenbn: head, then backbone.trainable=True",
            frozen_lr=True, prepare=convert_frozen,
            head_first=True),
    )
}
"""Every arm, by name."""

DEMO_ARMS = ("stock", "stock_recalibrated", "frozenbn")
"""The arms `frozenbn demo` runs: stock Keras and the remedies the README
recommends (recalibrate a model trained with stock BN, which `audit`
recommends at the demo's batch size; freeze the statistics, which it
recommends where `fit`'s batch statistics drift, as at small batches).
Keras's own BN `trainable=False` is one `--arms` away; the gap benchmark
runs it."""

GAP_ARMS = DEMO_ARMS + ("keras_bn_frozen", "frozenbn_recalibrated",
                        "keras_backbone_frozen")
"""The arms `benchmarks/gap.py` runs by default."""


AUDIT_ARMS = {
    "freeze": "frozenbn",
    "recalibrate": "stock_recalibrated",
    "recalibrate then freeze": "frozenbn_recalibrated",
}
"""The arm that follows each remedy `frozenbn.audit` can recommend for the
pretrained backbone."""


def audit_pick(audit: dict, batch_size: int) -> tuple:
    """The remedy `frozenbn.audit`'s rule gives for a scenario's audit, and
    the arm that follows it.

    The scenario audits the pretrained backbone, in which `fit` normalizes
    every BN layer with batch statistics, at the fine-tuning batch size, so
    the rule reads the worst layer score and that batch size. Results
    recorded before the rule changed keep their old recommendation text;
    this applies today's rule to what they measured.

    Args:
        audit: A scenario's `audit`, `{"max_score": ..., ...}`.
        batch_size: The scenario's batch size (its config's `batch_size`).

    Returns:
        `(remedy, arm name)`.

    Example:

    >>> audit_pick({"max_score": 2.2}, 32)
    ('freeze', 'frozenbn')
    >>> audit_pick({"max_score": 1.2}, 32)
    ('recalibrate', 'stock_recalibrated')
    >>> audit_pick({"max_score": 1.2}, 8)
    ('freeze', 'frozenbn')
    """
    remedy = Recommendation.from_scores([audit["max_score"]], [True],
                                        batch_size=batch_size).remedy
    return remedy, AUDIT_ARMS[remedy]


def check_arms(arms) -> None:
    """Raises `ValueError` for unknown or misordered arm names."""
    for index, name in enumerate(arms):
        if name not in ARMS:
            raise ValueError(
                f"Unknown arm {name!r}. Expected one of {sorted(ARMS)}."
            )
        base = ARMS[name].derived_from
        if base and base not in arms[:index]:
            raise ValueError(
                f"Arm {name!r} recalibrates the checkpoint of arm {base!r}; "
                f"list {base!r} before it."
            )
