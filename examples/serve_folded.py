"""Convert and fold a saved model for serving.

Usage:
    python examples/serve_folded.py MODEL.keras OUT_DIR

Writes OUT_DIR/folded.keras (BN folded into the preceding Conv/Dense layers,
a plain Keras model) and, on the TensorFlow backend, OUT_DIR/saved_model
(`model.export`), and checks that the folded model predicts what the original
predicts in inference mode.
"""

import argparse
import os

import keras
import numpy as np

import frozenbn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    args = parser.parse_args(argv)

    model = keras.models.load_model(args.model)
    folded, report = frozenbn.fold(model)
    print(report)

    shape = (4, *model.input_shape[1:])
    x = np.random.default_rng(0).uniform(0, 255, shape).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(folded(x, training=False))
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    error = float(np.max(np.abs(got - expected))) / scale
    print(f"max relative difference folded vs original: {error:.2e}")

    os.makedirs(args.out, exist_ok=True)
    folded.save(os.path.join(args.out, "folded.keras"))
    if keras.config.backend() == "tensorflow":
        folded.export(os.path.join(args.out, "saved_model"), verbose=False)
    print(f"wrote {args.out}")
    return error


if __name__ == "__main__":
    main()
