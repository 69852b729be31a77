"""The `frozenbn` command line: demo, convert, audit, recalibrate.

Every subcommand has `--help`. Errors (a missing or corrupt file, a file
that is not a Keras model, an empty image folder, a bad option) print one
line, `frozenbn: error: ...`, to stderr and exit with a non-zero status;
set `FROZENBN_DEBUG=1` to get the traceback instead.
"""

import argparse
import os
import re
import sys
import warnings
import zipfile
from typing import Optional
from typing import Sequence

from frozenbn import _images
from frozenbn.demo import ARMS
from frozenbn.demo import DEMO_ARMS

EXIT_ERROR = 1
EXIT_USAGE = 2
# Terminal colour and style codes (Keras puts bold into its error messages).
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class CliError(Exception):
    """An error reported to the user as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(
            EXIT_USAGE,
            f"frozenbn: error: {message} (see `{self.prog} --help`)\n",
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the `frozenbn` command line.

    Args:
        argv: Arguments without the program name. Defaults to
            `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 on an error, 2 on a usage error.

    Example:

    >>> from frozenbn.cli import main
    >>> main(["demo", "--quick", "--out", "/tmp/demo"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error already printed
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args) or 0
    except KeyboardInterrupt:
        print("frozenbn: error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # One line for the user, no traceback.
        if os.environ.get("FROZENBN_DEBUG"):
            raise
        print(f"frozenbn: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Shows frozenbn's own warnings as one line; drops library chatter."""
    module = getattr(sys.modules.get("frozenbn"), "__file__", "") or ""
    if os.path.dirname(module) and filename.startswith(os.path.dirname(module)):
        print(f"frozenbn: warning: {_one_line(message)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `frozenbn` and its subcommands."""
    parser = _Parser(
        prog="frozenbn",
        description="BatchNormalization that behaves the same in fit() and "
        "evaluate(): demo, convert, audit and recalibrate Keras models.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    _add_convert(commands)
    _add_audit(commands)
    _add_recalibrate(commands)
    return parser


def _add_demo(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="fine-tune ResNet50 on real images: stock Keras vs frozenbn",
        description="Runs the fit-vs-evaluate scenario end to end: ResNet50 "
        "pretrained on one image domain, fine-tuned on another (imbalanced, "
        "oversampled) with stock Keras BatchNormalization, with stock "
        "training then frozenbn.recalibrate, and with frozenbn.convert "
        "(frozen statistics); --arms adds others, such as Keras's BN "
        "trainable=False (keras_bn_frozen). "
        "Prints a table and writes results.json, results.md and results.png "
        "(per-epoch curves) to --out.",
    )
    demo.add_argument("--weights", default="none", metavar="PATH|imagenet|none",
                      help="ResNet50 weights: 'none' (random init, "
                      "pretrained on the shipped source images; default), "
                      "'imagenet' (Keras download/cache) or a weights file")
    demo.add_argument("--data", metavar="DIR",
                      help="your own target images: DIR/class_a/*.png, "
                      "DIR/class_b/*.png (a quarter is held out); default: "
                      "the shipped handwritten digits")
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help="maximum fine-tuning epochs (default 12; 2 with "
                      "--quick)")
    demo.add_argument("--image-size", type=_image_size, default=32,
                      help="input side in pixels, >= 32 (default 32)")
    demo.add_argument("--batch-size", type=_positive_int, default=32,
                      help="batch size (default 32)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--arms", default=None,
                      help=f"comma-separated arms (default: "
                      f"{','.join(DEMO_ARMS)}); all: {', '.join(ARMS)}")
    demo.add_argument("--out", default="frozenbn-demo", metavar="DIR",
                      help="output folder (default ./frozenbn-demo)")
    demo.add_argument("--quick", action="store_true",
                      help="check the whole run in under a minute: a small "
                      "ResNet (ResNet50 with --weights), 128 images, 2 "
                      "epochs, no source pretraining")
    demo.set_defaults(run=_run_demo)


def _add_convert(commands) -> None:
    convert = commands.add_parser(
        "convert",
        help="make a model's BatchNormalization layers frozenbn's",
        description="Loads IN.keras, replaces every Keras "
        "BatchNormalization with frozenbn.BatchNormalization (same weights, "
        "frozen statistics unless --unfrozen) and saves OUT.keras, which "
        "loads with keras.models.load_model once frozenbn is imported.",
    )
    convert.add_argument("input", metavar="IN.keras")
    convert.add_argument("output", metavar="OUT.keras")
    convert.add_argument("--unfrozen", action="store_true",
                         help="convert with frozen=False (stock behaviour)")
    convert.add_argument("--fold", action="store_true",
                         help="also fold BN into the preceding Conv/Dense "
                         "layers (an inference-only model)")
    convert.set_defaults(run=_run_convert)


def _add_data_arguments(parser) -> None:
    parser.add_argument("data", metavar="DATA_DIR",
                        help="images in one subfolder per class, "
                        "e.g. DATA_DIR/cats/*.png, DATA_DIR/dogs/*.png")
    parser.add_argument("--image-size", type=_positive_int, default=None,
                        help="resize images to this side (default: the "
                        "model's input size)")
    parser.add_argument("--preprocess", choices=_images.PREPROCESSING,
                        default="none",
                        help="pixel preprocessing the model expects: none "
                        "(0..255), unit (0..1), or keras.applications "
                        "mode caffe (ResNet50), tf (-1..1), torch "
                        "(default none)")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="batch size (default 32; use training's)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="number of batches to use (default all)")


def _add_audit(commands) -> None:
    audit = commands.add_parser(
        "audit",
        help="explain a model's fit-vs-evaluate gap on a folder of images",
        description="Compares, per BatchNormalization layer, the batch "
        "statistics on DATA_DIR with the moving statistics, and the "
        "model's loss in training vs inference mode. Prints the report and "
        "writes audit.json and audit.png to --out.",
    )
    audit.add_argument("model", metavar="MODEL.keras")
    _add_data_arguments(audit)
    audit.add_argument("--loss", default=None,
                       help="Keras loss name (default: the model's "
                       "compiled loss)")
    audit.add_argument("--out", default="frozenbn-audit", metavar="DIR",
                       help="output folder (default ./frozenbn-audit)")
    audit.set_defaults(run=_run_audit)


def _add_recalibrate(commands) -> None:
    recalibrate = commands.add_parser(
        "recalibrate",
        help="set BN statistics to their exact values on a folder of images",
        description="Precise BN: replaces the moving statistics of every "
        "BatchNormalization layer of MODEL.keras with the population "
        "statistics of its inputs over DATA_DIR and saves OUT.keras.",
    )
    recalibrate.add_argument("model", metavar="MODEL.keras")
    _add_data_arguments(recalibrate)
    recalibrate.add_argument("output", metavar="OUT.keras")
    recalibrate.set_defaults(run=_run_recalibrate)


def _run_demo(args) -> int:
    from frozenbn import demo

    demo.run_demo(
        args.out, weights=args.weights, data=args.data, epochs=args.epochs,
        image_size=args.image_size, batch_size=args.batch_size,
        seed=args.seed, arms=args.arms, quick=args.quick,
    )
    return 0


def _run_convert(args) -> int:
    import frozenbn

    model = _load_model(args.input)
    _check_output(args.output, args.input)
    frozen = not args.unfrozen
    converted = frozenbn.convert(model, frozen=frozen)
    # The layers convert changed: frozenbn's with `frozen` now, not before
    # (convert warns, and this is 0, when it changed nothing).
    count = _count_frozenbn(converted, frozen) - _count_frozenbn(model, frozen)
    if args.fold:
        from frozenbn.fold import fold

        converted, report = fold(converted)
        print(report)
    converted.save(args.output)
    state = "frozen" if frozen else "unfrozen"
    if count:
        folded = ", folded" if args.fold else ""
        print(f"converted {count} BatchNormalization layer(s) "
              f"({state}{folded}) -> {args.output}")
    elif args.fold:
        print("converted no BatchNormalization layer (nothing to change), "
              f"folded -> {args.output}")
    else:
        print("converted no BatchNormalization layer (nothing to change); "
              f"wrote an unchanged copy -> {args.output}")
    return 0


def _count_frozenbn(model, frozen: bool) -> int:
    """The frozenbn BatchNormalization layers of `model` with `frozen`."""
    import frozenbn
    from frozenbn import _keras_private

    return sum(isinstance(layer, frozenbn.BatchNormalization)
               and layer.frozen == frozen
               for layer in _keras_private.iter_layers(model))


def _run_audit(args) -> int:
    from frozenbn._report import write_json
    from frozenbn.audit import audit

    model = _load_model(args.model)
    x, y = _load_folder(args, model)
    report = audit(model, (x, y), loss=args.loss, steps=args.steps,
                   batch_size=args.batch_size)
    print(report)
    os.makedirs(args.out, exist_ok=True)
    json_path = write_json(report.to_dict(),
                           os.path.join(args.out, "audit.json"))
    png_path = os.path.join(args.out, "audit.png")
    report.plot(png_path)
    print(f"wrote {json_path}, {png_path}")
    return 0


def _run_recalibrate(args) -> int:
    from frozenbn.recalibrate import recalibrate

    model = _load_model(args.model)
    _check_output(args.output, args.model)
    x, _ = _load_folder(args, model)
    count = recalibrate(model, x, steps=args.steps, verbose=1,
                        batch_size=args.batch_size)
    model.save(args.output)
    print(f"recalibrated {count} BatchNormalization layer(s) on "
          f"{len(x)} image(s) -> {args.output}")
    return 0


def _load_model(path: str):
    """Loads a `.keras` file, turning every failure into a `CliError`."""
    if not os.path.exists(path):
        raise CliError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CliError(f"{path} is a folder, not a .keras model file")
    if not path.endswith(".keras"):
        raise CliError(
            f"{path} is not a .keras file; save the model with "
            "model.save('model.keras') (the Keras 3 format)"
        )
    if not zipfile.is_zipfile(path):
        raise CliError(f"{path} is corrupt or not a Keras 3 .keras archive")
    import keras

    import frozenbn  # noqa: F401  (registers the frozenbn layers)

    try:
        model = keras.models.load_model(path)
    except Exception as error:
        raise CliError(f"could not load {path}: {_one_line(error)}") from None
    if not isinstance(model, keras.Model):
        raise CliError(
            f"{path} holds a {type(model).__name__} layer, not a Keras model"
        )
    return model


def _check_output(output: str, input_path: str) -> None:
    if not output.endswith(".keras"):
        raise CliError(f"the output file must end in .keras: {output}")
    if os.path.abspath(output) == os.path.abspath(input_path):
        raise CliError(f"refusing to overwrite the input file {input_path}; "
                       "give another output file")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise CliError(f"output folder does not exist: {folder}")


def _load_folder(args, model) -> tuple:
    """The images of `args.data`, sized and preprocessed for `model`."""
    size = args.image_size or _input_size(model)
    x, y, _ = _images.load_image_folder(args.data, size,
                                        channels=_input_channels(model))
    return _images.preprocess(x, args.preprocess), y.astype("float32")


def _input_size(model) -> int:
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4:
        raise CliError(
            f"model '{model.name}' does not take one batch of images "
            f"(input shape {shape}); audit and recalibrate need a model "
            "with a single (batch, height, width, channels) input"
        )
    if shape[1] is None or shape[1] != shape[2]:
        raise CliError(
            f"model '{model.name}' has input shape {shape}; pass "
            "--image-size to choose the image size"
        )
    return int(shape[1])


def _input_channels(model) -> int:
    """1 or 3: how the images are read for `model` (3 if it does not say)."""
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or shape[-1] is None:
        return 3  # not one batch of images: the model itself will say so
    channels = shape[-1]
    if channels not in (1, 3):
        raise CliError(
            f"model '{model.name}' takes images with {channels} channels; "
            "audit and recalibrate read images as 1 channel (grayscale) or "
            "3 (RGB)"
        )
    return int(channels)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}")
    return value


def _image_size(text: str) -> int:
    value = _positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(
            f"ResNet50 needs images of at least 32 pixels, got {value}")
    return value


def _one_line(error) -> str:
    """An error or warning as one line, without terminal escape codes."""
    from frozenbn import _checks

    whole = isinstance(error, (CliError, FileNotFoundError))
    text = _ANSI_ESCAPE.sub("", str(error))
    return _checks.one_line(text or type(error).__name__,
                            limit=None if whole else 400)


if __name__ == "__main__":
    sys.exit(main())
