"""Recalibrate BatchNormalization statistics after a domain shift.

Usage:
    python examples/recalibrate_after_shift.py MODEL.keras NEW_IMAGES_DIR OUT.keras

Loads a model trained on one domain, prints `frozenbn.audit` on images of the
new domain (which BN layers drift, and the fit-mode vs inference loss), replaces
the BN statistics with their exact values on the new images
(`frozenbn.recalibrate`, "precise BN") and saves the result.
"""

import argparse

import keras
import numpy as np

import frozenbn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("images")
    parser.add_argument("out")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    model = keras.models.load_model(args.model)
    size = tuple(model.input_shape[1:3])
    dataset = keras.utils.image_dataset_from_directory(
        args.images, image_size=size, batch_size=args.batch_size,
        shuffle=False,
    )
    x = np.concatenate([images for images, _ in dataset])
    y = np.concatenate([labels for _, labels in dataset])

    before = frozenbn.audit(model, (x, y))
    print(before)
    frozenbn.recalibrate(model, x, batch_size=args.batch_size)
    after = frozenbn.audit(model, (x, y))
    print(f"inference loss on the new images: {before.inference_loss:.4f} "
          f"before, {after.inference_loss:.4f} after recalibration")
    model.save(args.out)
    print(f"saved {args.out}")
    return before, after


if __name__ == "__main__":
    main()
