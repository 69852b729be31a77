"""Images from disk and the preprocessing that pretrained backbones expect.

Used by the command line (`frozenbn audit`, `frozenbn recalibrate`) and by
the demo, which reads a user's folder the same way.
"""

import os
import warnings
from typing import Optional

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
PREPROCESSING = ("none", "unit", "caffe", "tf", "torch")


def load_image_folder(
    path: str,
    image_size: int = 32,
    *,
    max_per_class: Optional[int] = None,
    channels: int = 3,
) -> tuple:
    """Reads a folder of images in one subfolder per class.

    The layout is the one of `keras.utils.image_dataset_from_directory`:
    `path/class_a/*.png`, `path/class_b/2023/*.jpg`, ... Classes are the
    subfolder names in sorted order, labelled 0, 1, ...; each class folder
    is read recursively, in Keras's order (folder by folder, files sorted),
    skipping hidden files and folders. A class folder without images keeps
    its label, as in Keras, and a `UserWarning` names it. Images are
    converted to RGB (or grayscale) and resized to `image_size` x
    `image_size` (bilinear); 16-bit images keep their top byte, as
    TensorFlow's decoders do. Reading uses Pillow only, so it works on every
    Keras backend.

    Args:
        path: The folder.
        image_size: Side of the square output images. Defaults to 32.
        max_per_class: Optional cap on images read per class (the first
            ones in the order above).
        channels: 3 (RGB) or 1 (grayscale). Defaults to 3.

    Returns:
        `(x, y, class_names)`: uint8 `(n, image_size, image_size, channels)`
        images, uint8 `(n,)` labels and the list of class names.

    Raises:
        FileNotFoundError: `path` is not a folder.
        ValueError: `path` has no class subfolder or no readable image, or
            `channels` is not 1 or 3 (`TypeError` if not an int).

    Example:

    >>> x, y, names = load_image_folder("my_photos", 64)  # doctest: +SKIP
    """
    from PIL import Image

    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(
            f"`channels` must be 1 (grayscale) or 3 (RGB). Received: "
            f"channels={channels!r} of type {type(channels).__name__}."
        )
    if channels not in (1, 3):
        raise ValueError(
            "`channels` must be 1 (grayscale) or 3 (RGB). Received: "
            f"channels={channels}"
        )
    if os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is a file, not a folder of images. Expected a folder "
            "with one subfolder per class, e.g. cats/*.png and dogs/*.png."
        )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Image folder not found: {path}")
    class_names = sorted(
        d for d in os.listdir(path)
        if os.path.isdir(os.path.join(path, d)) and not d.startswith(".")
    )
    if not class_names:
        raise ValueError(
            f"No class subfolders in {path}. Expected one subfolder per "
            "class, e.g. cats/*.png and dogs/*.png."
        )
    mode = "L" if channels == 1 else "RGB"
    images, labels, empty = [], [], []
    for label, name in enumerate(class_names):
        files = _image_files(os.path.join(path, name))[:max_per_class]
        if not files:
            empty.append(name)
        for file in files:
            with Image.open(file) as image:
                image = _eight_bit(image).convert(mode).resize(
                    (image_size, image_size), Image.BILINEAR
                )
                pixels = np.asarray(image, dtype=np.uint8)
            images.append(pixels.reshape((image_size, image_size, channels)))
            labels.append(label)
    if not images:
        raise ValueError(
            f"No images found in the class subfolders of {path} "
            f"({', '.join(class_names)}); expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    if empty:
        pairs = {name: f"{name}={label}"
                 for label, name in enumerate(class_names)}
        kept = [pairs[name] for name in class_names if name not in empty]
        warnings.warn(
            f"Class folder(s) {', '.join(empty)} in {path} hold no images "
            f"but still take a label ({', '.join(pairs[n] for n in empty)}), "
            "as in keras.utils.image_dataset_from_directory: the images are "
            f"labelled {', '.join(kept)}. The model's labels must match; "
            "remove the empty folder(s), or move images into them.",
            UserWarning,
            stacklevel=2,
        )
    return np.stack(images), np.asarray(labels, dtype=np.uint8), class_names


def preprocess(
    x: np.ndarray, mode: str = "caffe", image_size: Optional[int] = None
) -> np.ndarray:
    """uint8 RGB (or grayscale) images to float32 model inputs.

    Resizes (bilinear, in `keras.ops.image.resize`) to `image_size` when
    given and different, then scales:

    - `"none"`: pixel values as they are (0-255);
    - `"unit"`: divided by 255;
    - `"caffe"`, `"tf"`, `"torch"`: `keras.applications.imagenet_utils.
      preprocess_input` in that mode (`"caffe"` is what ResNet50's ImageNet
      weights expect; it and `"torch"` need 3 channels).

    Args:
        x: `(n, h, w, channels)` images.
        mode: One of `PREPROCESSING`. Defaults to `"caffe"`.
        image_size: Optional output side.

    Returns:
        A float32 `(n, size, size, channels)` array.

    Example:

    >>> preprocess(np.full((1, 2, 2, 3), 255, np.uint8), "unit").max()
    np.float32(1.0)
    """
    if mode not in PREPROCESSING:
        raise ValueError(
            f"Unknown preprocessing {mode!r}; expected one of {PREPROCESSING}."
        )
    if mode in ("caffe", "torch") and np.shape(x)[-1] != 3:
        raise ValueError(
            f"Preprocessing {mode!r} normalizes each RGB channel with "
            "ImageNet's statistics, so it needs 3-channel images. Received: "
            f"images with {np.shape(x)[-1]} channel(s). Use 'unit' (0..1), "
            "'tf' (-1..1) or 'none' (0..255) for them."
        )
    import keras

    x = np.asarray(x).astype("float32")
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
        chunks = [
            keras.ops.convert_to_numpy(
                keras.ops.image.resize(x[i : i + 256], (image_size, image_size))
            )
            for i in range(0, len(x), 256)
        ]
        x = np.concatenate(chunks).astype("float32")
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255.0
    return keras.applications.imagenet_utils.preprocess_input(x, mode=mode)


def _image_files(folder: str) -> list:
    """The image files under `folder`, in Keras's order: folder by folder
    (sorted paths), files sorted; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            (root, f) for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        ]
    return [os.path.join(root, f) for root, f in sorted(found)]


def _eight_bit(image):
    """16-bit images as 8-bit "L", keeping the top byte as `tf.io.decode_png`
    does (32-bit "I" ones as 16-bit: older Pillow opens 16-bit PNGs so);
    float "F" ones as 0..1, scaled to 0..255. Pillow's `convert` would clip
    them instead: nearly all white."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return Image.fromarray((pixels >> 8).astype(np.uint8))
    if image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        pixels = np.clip(pixels, 0.0, 1.0)
        return Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    return image
