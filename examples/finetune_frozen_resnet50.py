"""Fine-tune ResNet50 with frozen BatchNormalization on your image folder.

Usage:
    python examples/finetune_frozen_resnet50.py IMAGES_DIR \
        [--weights resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5] \
        [--image-size 224] [--epochs 5] [--out model.keras]

IMAGES_DIR holds one subfolder per class (IMAGES_DIR/cats/*.jpg, ...).
`--weights` is a local ImageNet weights file (Keras's `notop` file, e.g. from
`~/.keras/models/`), "imagenet" to let Keras fetch it, or "none".
"""

import argparse

import keras

import frozenbn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="model.keras")
    args = parser.parse_args(argv)

    size = (args.image_size, args.image_size)
    train, val = keras.utils.image_dataset_from_directory(
        args.images, image_size=size, batch_size=args.batch_size,
        validation_split=0.25, subset="both", seed=0,
    )
    classes = len(train.class_names)

    # Build the backbone with frozenbn layers; the weights load as usual.
    with frozenbn.patch(frozen=True):
        backbone = keras.applications.ResNet50(
            weights=None if args.weights == "none" else args.weights,
            include_top=False, input_shape=(*size, 3),
        )
    inputs = keras.Input((*size, 3))
    x = keras.applications.resnet50.preprocess_input(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)

    # Frozen statistics want a smaller learning rate than stock BN.
    model.compile(keras.optimizers.Adam(1e-5),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=args.epochs)
    fit_loss = history.history["loss"][-1]
    evaluate_loss = model.evaluate(train, verbose=0)[0]
    print(f"last fit loss {fit_loss:.4f}, evaluate on the same data "
          f"{evaluate_loss:.4f}")
    model.save(args.out)
    print(f"saved {args.out}")
    return fit_loss, evaluate_loss


if __name__ == "__main__":
    main()
