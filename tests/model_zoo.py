"""Every BatchNormalization model that the installed Keras and keras-hub ship.

The lists are derived from the installed packages, not written by hand:

- `keras_applications()`: every model builder exported by
  `keras.applications` whose source (or the `keras.applications` modules
  it builds on) uses BatchNormalization.
- `keras_hub_backbones()` / `keras_hub_tasks()`: every class exported by
  `keras_hub.models` that subclasses `Backbone` and whose package uses
  BatchNormalization, and every image task (classifier, segmenter,
  detector, ...) whose `backbone_cls` is one of them.

Each entry builds a small instance offline (random weights, small images,
small configs) so the sweep in `tests/test_model_sweep.py` can run every
tool on every model. One representative per code path runs on every
push (`ZooModel.full` is False): per `keras.applications` module its
smallest builder, per keras-hub backbone class its smallest
configuration, per keras-hub task kind (classifier, segmenter, detector)
one task (the one with the least code). The rest form the `full` tier
(`pytest --full`). keras-hub backbones take architecture arguments
without defaults; `TINY_BACKBONE_KWARGS` holds a small configuration per
class. A new BN-bearing backbone without one fails
`test_every_discovered_model_can_be_built` with a message saying what to
add, so no model is silently left out.
"""

import dataclasses
import importlib
import inspect
import os
import re
from typing import Callable
from typing import List

import keras

# Models whose builder refuses inputs smaller than this side.
_MIN_SIDE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A model to sweep: an id, a builder and its input size."""

    id: str
    build: Callable[[], keras.Model]
    image_size: int
    family: str  # "applications", "hub_backbone" or "hub_task"
    full: bool = False  # in the `full` tier only; else a representative
    group: str = ""  # the code path it represents: module, class or kind
    channels_first: bool = False  # built with image_data_format channels_first

    def __repr__(self) -> str:
        return self.id

    def images(self, n: int = 2, seed: int = 1):
        """`n` random images of the model's input size, in its layout."""
        from tests import testing

        x = testing.images(n, self.image_size, seed=seed)
        return x.transpose(0, 3, 1, 2).copy() if self.channels_first else x


def _uses_batch_norm(source: str) -> bool:
    return "BatchNormalization" in source


def _application_sources(module) -> str:
    """The module's source plus the `keras.applications` modules it imports."""
    source = inspect.getsource(module)
    parts = [source]
    for name in set(re.findall(r"keras\.src\.applications(?:\.| import )(\w+)", source)):
        try:
            parts.append(
                inspect.getsource(
                    importlib.import_module(f"keras.src.applications.{name}")
                )
            )
        except (ImportError, OSError):
            continue
    return "\n".join(parts)


def keras_applications() -> List[ZooModel]:
    """Every `keras.applications` model that contains BatchNormalization.

    The first builder defined in each `keras.applications` module (the
    smallest of its family: ResNet50, DenseNet121, EfficientNetB0, ...;
    `test_representatives_are_the_smallest` checks it) represents the
    module; its other builders run the same code at other depths and
    widths and form the `full` tier.
    """
    models, seen_modules = [], set()
    builders = []
    for name in dir(keras.applications):
        builder = getattr(keras.applications, name)
        if not (name[:1].isupper() and inspect.isfunction(builder)):
            continue
        if "include_top" not in inspect.signature(builder).parameters:
            continue
        module = inspect.getmodule(builder)
        line = inspect.getsourcelines(builder)[1]
        builders.append((module.__name__, line, name, builder, module))
    for module_name, _, name, builder, module in sorted(builders):
        if not _uses_batch_norm(_application_sources(module)):
            continue
        side = _MIN_SIDE.get(name, 32)

        def build(builder=builder, side=side):
            return builder(
                weights=None, include_top=False, input_shape=(side, side, 3)
            )

        models.append(
            ZooModel(
                id=name,
                build=build,
                image_size=side,
                family="applications",
                full=module_name in seen_modules,
                group=module_name.rsplit(".", 1)[-1],
            )
        )
        seen_modules.add(module_name)
    return sorted(models, key=lambda model: model.id)


def keras_application_variants() -> List[ZooModel]:
    """`keras.applications` models built the other ways users build them.

    `keras_applications()` builds each at one input size, channels_last,
    without the classifier top. These are built with
    `image_data_format="channels_first"` (the layout that every kernel and
    axis rule of fold and fuse must follow), with an open input shape
    `(None, None, 3)` called at another size, and with the classifier top
    (Dropout, then Dense). One runs on every push, the rest in the `full`
    tier.
    """
    apps = keras.applications
    variants = [
        # (id, builder, image size, channels_first)
        ("MobileNetV3Small-channels_first", lambda: apps.MobileNetV3Small(
            weights=None, include_top=False, minimalistic=True,
            include_preprocessing=False, input_shape=(3, 32, 32)), 32, True),
        ("ResNet50-channels_first-top", lambda: apps.ResNet50(
            weights=None, classes=10, input_shape=(3, 32, 32)), 32, True),
        ("ResNet50V2-open_shape", lambda: apps.ResNet50V2(
            weights=None, include_top=False, input_shape=(None, None, 3),
            pooling="avg"), 40, False),
        ("EfficientNetV2B0-top", lambda: apps.EfficientNetV2B0(
            weights=None, classes=3, classifier_activation=None,
            input_shape=(32, 32, 3)), 32, False),
    ]
    return [
        ZooModel(
            id=name,
            build=_with_data_format(builder, channels_first),
            image_size=side,
            family="applications",
            full=index > 0,
            group="variants",
            channels_first=channels_first,
        )
        for index, (name, builder, side, channels_first) in enumerate(variants)
    ]


def _with_data_format(builder, channels_first):
    def build():
        before = keras.config.image_data_format()
        keras.config.set_image_data_format(
            "channels_first" if channels_first else "channels_last")
        try:
            return builder()
        finally:
            keras.config.set_image_data_format(before)

    return build


# ---------------------------------------------------------------------------
# keras-hub

# Small configurations of the keras-hub backbones that take architecture
# arguments without defaults. Values are callables of `image_size` so that
# nested image encoders can be built fresh for each model. Several entries
# per class cover variants that build differently (ResNet v1/v2 blocks,
# EfficientNet v1/fused v2 blocks).


def _resnet(size, block="basic_block", stages=4, pre_activation=False):
    # keras-hub requires 64 filters in the first stage.
    filters = [64] * stages
    return dict(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=filters,
        stackwise_num_blocks=[1] * stages,
        stackwise_num_strides=[1] + [2] * (stages - 1),
        block_type=block,
        use_pre_activation=pre_activation,
        image_shape=(size, size, 3),
    )


def _hub_resnet(size, **kwargs):
    import keras_hub

    kwargs = {**_resnet(size, **kwargs), "image_shape": (None, None, 3)}
    return keras_hub.models.ResNetBackbone(**kwargs)


def _hgnetv2(size, out_features=None):
    return dict(
        depths=[1, 1, 1],
        embedding_size=8,
        hidden_sizes=[16, 32, 64],
        stem_channels=[3, 8, 8],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=[
            (8, 8, 16, 1, 1, 3),
            (16, 8, 32, 1, 1, 3),
            (32, 16, 64, 1, 1, 3),
        ],
        apply_downsample=[False, True, True],
        use_lightweight_conv_block=[False, True, False],
        image_shape=(size, size, 3),
        **({"out_features": out_features} if out_features else {}),
    )


def _efficientnet(size, fused=False):
    blocks = ["fused", "fused"] if fused else ["v1", "v1"]
    se = [0.0, 0.0] if fused else [0.25, 0.25]
    return dict(
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 4],
        stackwise_squeeze_and_excite_ratios=se,
        stackwise_strides=[1, 2],
        stackwise_block_types=blocks,
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        input_shape=(size, size, 3),
        dropout=0.0,
    )


def _mobilenetv5(size, msfa):
    return dict(
        stackwise_block_types=[["er"], ["uir", "uir"]],
        stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[8], [16, 16]],
        stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[2.0], [2.0, 2.0]],
        stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [3, 3]],
        stackwise_dw_start_kernel_sizes=[[0], [0, 0]],
        stackwise_dw_end_kernel_sizes=[[0], [0, 0]],
        stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]],
        stackwise_num_heads=[[0], [0, 0]],
        stackwise_key_dims=[[0], [0, 0]],
        stackwise_value_dims=[[0], [0, 0]],
        stackwise_kv_strides=[[0], [0, 0]],
        stackwise_use_cpe=[[False], [False, False]],
        stem_size=8,
        num_features=32,
        use_msfa=msfa,
        msfa_output_resolution=4,
        # The default RMS norm has no BatchNormalization; the blocks
        # support both.
        norm_layer="batch_norm",
        image_shape=(size, size, 3),
    )


TINY_BACKBONE_KWARGS = {
    "ResNetBackbone": [
        lambda s: _resnet(s, stages=2, pre_activation=True),
        lambda s: _resnet(s, stages=2),
        lambda s: _resnet(s, block="bottleneck_block", stages=2),
    ],
    "CSPNetBackbone": [
        lambda s: dict(
            stem_filters=8,
            stem_kernel_size=3,
            stem_strides=1,
            stackwise_depth=[1, 1],
            stackwise_strides=[1, 2],
            stackwise_num_filters=[8, 16],
            block_type="dark_block",
            stage_type="dark",
            image_shape=(s, s, 3),
        ),
    ],
    "DenseNetBackbone": [
        lambda s: dict(
            stackwise_num_repeats=[1, 1],
            growth_rate=4,
            compression_ratio=0.5,
            image_shape=(s, s, 3),
        ),
    ],
    "EfficientNetBackbone": [
        lambda s: _efficientnet(s),
        lambda s: _efficientnet(s, fused=True),
    ],
    "HGNetV2Backbone": [lambda s: _hgnetv2(s)],
    "MobileNetBackbone": [
        lambda s: dict(
            stackwise_expansion=[[16], [24, 24]],
            stackwise_num_blocks=[1, 2],
            stackwise_num_filters=[[8], [16, 16]],
            stackwise_kernel_size=[[3], [3, 3]],
            stackwise_num_strides=[[2], [2, 1]],
            stackwise_se_ratio=[[None], [0.25, 0.25]],
            stackwise_activation=[["relu"], ["hard_swish", "hard_swish"]],
            stackwise_padding=[[1], [1, 1]],
            output_num_filters=32,
            depthwise_stride=1,
            depthwise_residual=False,
            last_layer_filter=32,
            input_activation="hard_swish",
            output_activation="hard_swish",
            input_num_filters=8,
            image_shape=(s, s, 3),
            depthwise_filters=8,
            squeeze_and_excite=0.5,
        ),
    ],
    "MobileNetV5Backbone": [
        lambda s: _mobilenetv5(s, msfa=False),
        lambda s: _mobilenetv5(s, msfa=True),
    ],
    "XceptionBackbone": [
        lambda s: dict(
            stackwise_conv_filters=[[8, 8], [16, 16], [16, 16]],
            stackwise_pooling=[True, True, False],
            image_shape=(s, s, 3),
        ),
    ],
    "DeepLabV3Backbone": [
        lambda s: dict(
            image_encoder=_hub_resnet(s, stages=4),
            projection_filters=8,
            low_level_feature_key="P2",
            spatial_pyramid_pooling_key="P5",
            upsampling_size=8,
            dilation_rates=[1, 2],
            image_shape=(s, s, 3),
        ),
    ],
    "BASNetBackbone": [
        lambda s: dict(
            image_encoder=_hub_resnet(s, stages=4),
            num_classes=1,
            # BASNet's stem feeds the encoder's first stage directly.
            projection_filters=64,
            image_shape=(s, s, 3),
        ),
    ],
    "RetinaNetBackbone": [
        lambda s: dict(
            image_encoder=_hub_resnet(s, stages=4),
            min_level=3,
            max_level=5,
            use_p5=False,
            use_fpn_batch_norm=True,
            image_shape=(s, s, 3),
        ),
    ],
    "SegFormerBackbone": [
        lambda s: dict(
            image_encoder=_mit(s),
            projection_filters=8,
        ),
    ],
    "DFineBackbone": [
        lambda s: dict(
            backbone=_hub_class("HGNetV2Backbone")(
                **{
                    **_hgnetv2(s, out_features=["stage2", "stage3"]),
                    "image_shape": (None, None, 3),
                }
            ),
            decoder_in_channels=[16, 16],
            encoder_hidden_dim=16,
            num_denoising=0,
            num_labels=2,
            hidden_dim=16,
            learn_initial_query=False,
            num_queries=8,
            anchor_image_size=(s, s),
            feat_strides=[16, 32],
            num_feature_levels=2,
            encoder_in_channels=[32, 64],
            encode_proj_layers=[1],
            num_attention_heads=2,
            encoder_ffn_dim=16,
            num_encoder_layers=1,
            hidden_expansion=0.5,
            depth_multiplier=0.5,
            eval_idx=-1,
            num_decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=16,
            decoder_n_points=[2, 2],
            lqe_hidden_dim=8,
            num_lqe_layers=1,
            out_features=["stage2", "stage3"],
            image_shape=(s, s, 3),
            seed=0,
        ),
    ],
}

_HUB_IMAGE_SIZE = 32

# The configuration (index in TINY_BACKBONE_KWARGS) a task builds its
# backbone from, where not the first (the smallest): keras-hub 0.32's
# MobileNetV5 classifier head builds BatchNormalization(axis=None) on a
# backbone without the multi-scale fusion adapter, so it takes the one
# with it, as in the presets; the ResNet classifier keeps the v1 blocks.
TASK_BACKBONE = {"MobileNetV5Backbone": 1, "ResNetBackbone": 1}


def _mit(size):
    return _hub_class("MiTBackbone")(
        image_shape=(size, size, 3),
        num_layers=2,
        hidden_dims=[8, 16],
        layerwise_depths=[1, 1],
        layerwise_num_heads=[1, 1],
        layerwise_sr_ratios=[2, 1],
        layerwise_patch_sizes=[3, 3],
        layerwise_strides=[4, 2],
        max_drop_path_rate=0.0,
    )


def _hub_class(name):
    import keras_hub

    return getattr(keras_hub.models, name)


def _package_uses_batch_norm(cls) -> bool:
    folder = os.path.dirname(inspect.getfile(cls))
    return any(
        _uses_batch_norm(open(os.path.join(folder, f), encoding="utf-8").read())
        for f in os.listdir(folder)
        if f.endswith(".py")
    )


def discovered_hub_backbones() -> list:
    """Names of the keras-hub backbone classes whose package uses BN."""
    # keras-hub is in the test extra: without it the sweep would lose half
    # its models silently, so its absence is an error here.
    import keras_hub

    return sorted(
        name
        for name in dir(keras_hub.models)
        if inspect.isclass(getattr(keras_hub.models, name))
        and issubclass(getattr(keras_hub.models, name), keras_hub.models.Backbone)
        and _package_uses_batch_norm(getattr(keras_hub.models, name))
    )


def keras_hub_backbones() -> List[ZooModel]:
    """A small instance of every BN-bearing keras-hub backbone (variants).

    The first configuration of each class (its smallest, which
    `test_representatives_are_the_smallest` checks) represents the class.
    """
    models = []
    for name in discovered_hub_backbones():
        for index, kwargs in enumerate(TINY_BACKBONE_KWARGS.get(name, [])):

            def build(name=name, kwargs=kwargs):
                return _hub_class(name)(**kwargs(_HUB_IMAGE_SIZE))

            suffix = f"-{index}" if index else ""
            models.append(
                ZooModel(f"{name}{suffix}", build, _HUB_IMAGE_SIZE,
                         "hub_backbone", full=index > 0, group=name)
            )
    return models


def discovered_hub_tasks() -> list:
    """Names of the keras-hub image tasks built on a BN-bearing backbone."""
    import keras_hub

    backbones = set(discovered_hub_backbones())
    names = []
    for name in dir(keras_hub.models):
        cls = getattr(keras_hub.models, name)
        if not (inspect.isclass(cls) and issubclass(cls, keras_hub.models.Task)):
            continue
        backbone_cls = getattr(cls, "backbone_cls", None)
        if backbone_cls is not None and backbone_cls.__name__ in backbones:
            names.append(name)
    return sorted(names)


def build_hub_task(name: str, image_size: int = _HUB_IMAGE_SIZE):
    """A small instance of the task class `name` on a small backbone.

    The backbone is the task's tiny configuration of its `backbone_cls`
    (`TASK_BACKBONE`, else the first); the task gets 2 classes and no
    preprocessor (the arguments that every keras-hub image task takes).
    """
    cls = _hub_class(name)
    backbone_name = cls.backbone_cls.__name__
    config = TINY_BACKBONE_KWARGS[backbone_name][TASK_BACKBONE.get(backbone_name, 0)]
    backbone = _hub_class(backbone_name)(**config(image_size))
    parameters = inspect.signature(cls.__init__).parameters
    kwargs = {"backbone": backbone, "preprocessor": None}
    if "num_classes" in parameters:
        kwargs["num_classes"] = 2
    return cls(**kwargs)


def task_kind(name: str) -> str:
    """The kind of keras-hub task `name` is, from its classes: the
    `keras_hub.models` class right below `Task` in its MRO
    (`ImageClassifier`, `ImageSegmenter`, `ObjectDetector`, ...)."""
    import keras_hub

    mro = _hub_class(name).__mro__
    index = mro.index(keras_hub.models.Task)
    return mro[index - 1].__name__ if index > 0 else name


def _code_lines(name: str) -> int:
    """Source lines of task `name`'s class and of its backbone class."""
    cls = _hub_class(name)
    return sum(len(inspect.getsource(c).splitlines())
               for c in (cls, cls.backbone_cls))


def keras_hub_tasks() -> List[ZooModel]:
    """A small instance of every keras-hub image task on a BN backbone.

    Each kind is represented by its task with the least code (its class and
    its backbone class): the kind's common path, the others' own paths in
    the `full` tier.
    """
    names = [name for name in discovered_hub_tasks()
             if cls_has_tiny_backbone(name)]
    kinds = {}
    for name in sorted(names, key=lambda name: (_code_lines(name), name)):
        kinds.setdefault(task_kind(name), name)
    representatives = set(kinds.values())
    return [
        ZooModel(name, lambda name=name: build_hub_task(name),
                 _HUB_IMAGE_SIZE, "hub_task",
                 full=name not in representatives, group=task_kind(name))
        for name in names
    ]


def cls_has_tiny_backbone(name: str) -> bool:
    return _hub_class(name).backbone_cls.__name__ in TINY_BACKBONE_KWARGS


def all_models() -> List[ZooModel]:
    """Every model of the sweep."""
    return (keras_applications() + keras_application_variants()
            + keras_hub_backbones() + keras_hub_tasks())


def coverage_markdown() -> str:
    """docs/coverage.md: the models the sweep covers, from the zoo itself.

    `tests/test_model_sweep.py::test_coverage_page_is_current` checks that
    the committed page equals this text; regenerate it with
    `python -m tests.model_zoo > docs/coverage.md`.
    """
    import keras_hub

    apps = keras_applications()
    variants = keras_application_variants()
    backbones = keras_hub_backbones()
    tasks = keras_hub_tasks()
    families = sorted({spec.id.split("-")[0] for spec in backbones})
    lines = [
        "# Model coverage",
        "",
        "Every tool (`convert` as a copy and in place, `freeze`/`unfreeze`, "
        "`fold`, `recalibrate`, `audit`, `patch`, and the `.keras` round trip) "
        "runs on every model below in `tests/test_model_sweep.py`, on "
        "TensorFlow, JAX and torch. One model per code path runs on every "
        "push: per `keras.applications` module its smallest builder, per "
        "keras-hub backbone class its smallest configuration, per keras-hub "
        "task kind the task with the least code. The others run in the `full` tier "
        "(`bash .ci/run full`). The list is not written by hand: "
        "`tests/model_zoo.py` derives it from the installed packages "
        f"(here Keras {keras.__version__} and keras-hub "
        f"{keras_hub.__version__}), and this page is generated from it "
        "(`python -m tests.model_zoo > docs/coverage.md`; a test checks it "
        "is current).",
        "",
        f"- **{len(apps)} `keras.applications` models**: every builder whose "
        "model contains BatchNormalization, with random weights at their "
        "smallest input size.",
        f"- **{len(variants)} of them built other ways**: with "
        "`image_data_format` `channels_first`, with an open input shape "
        "called at another size, and with the classifier top.",
        f"- **{len(families)} keras-hub backbone classes** in "
        f"{len(backbones)} configurations: every `keras_hub.models.Backbone` "
        "whose package uses BatchNormalization, built offline from small "
        "configurations.",
        f"- **{len(tasks)} keras-hub task models**: every image classifier, "
        "segmenter and detector built on one of those backbones.",
        "",
        "What the sweep checks, per model: the converted copy keeps the "
        "model's class and every weight bit for bit, its outputs equal the "
        "original's, and the original is untouched; a frozen model's "
        "training-mode output equals its inference output (dropout-like "
        "layers off); `fold` matches the model to 1e-5 relative and reports "
        "every BN layer it leaves, with the reason; `recalibrate` writes "
        "every BN layer the forward pass calls, and no other; `audit` "
        "reports every called layer; layers built inside `frozenbn.patch()` "
        "are frozenbn's.",
        "",
        "Two things the sweep found, and what frozenbn does about them:",
        "",
        "- keras-hub models rebuild their layers from constructor arguments "
        "when they load, so a saved `.keras` file does not record which "
        "BatchNormalization layers were frozenbn's: it loads with Keras's "
        "layers, the same weights and the same inference outputs. `convert` "
        "warns about it; load such a file inside `with frozenbn.patch():`, or "
        "call `frozenbn.convert(model, inplace=True)` after loading.",
        "- Some keras-hub layers do not rebuild from their own config "
        "(SegFormer's and MiT's `HierarchicalTransformerEncoder`, D-FINE's "
        "decoder). `fold` then folds a private copy made from the model's "
        "config and reuses those layers, with a warning: the folded model "
        "works, but a `.keras` file of it will not load.",
        "",
        "| family | model | runs |",
        "|---|---|---|",
    ]
    for spec in apps + variants + backbones + tasks:
        family = {
            "applications": "keras.applications",
            "hub_backbone": "keras-hub backbone",
            "hub_task": "keras-hub task",
        }[spec.family]
        tier = "full tier" if spec.full else f"every push (`{spec.group}`)"
        lines.append(f"| {family} | `{spec.id}` | {tier} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(coverage_markdown(), end="")
