"""Images from disk and the preprocessing that pretrained backbones expect.

Used by the command line (`frozenbn audit`, `frozenbn recalibrate`) and by
the demo, which reads a user's folder the same way.
"""

import os
from typing import Optional

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
PREPROCESSING = ("none", "unit", "caffe", "tf", "torch")


def load_image_folder(
    path: str, image_size: int = 32, *, max_per_class: Optional[int] = None
) -> tuple:
    """Reads a folder of images in one subfolder per class.

    The layout is the one of `keras.utils.image_dataset_from_directory`:
    `path/class_a/*.png`, `path/class_b/*.jpg`, ... Classes are the
    subfolder names in sorted order, labelled 0, 1, ... Images are
    converted to RGB and resized to `image_size` x `image_size` (bilinear).
    Reading uses Pillow only, so it works on every Keras backend.

    Args:
        path: The folder.
        image_size: Side of the square output images. Defaults to 32.
        max_per_class: Optional cap on images read per class (the first
            ones in sorted file order).

    Returns:
        `(x, y, class_names)`: uint8 `(n, image_size, image_size, 3)`
        images, uint8 `(n,)` labels and the list of class names.

    Raises:
        FileNotFoundError: `path` is not a folder.
        ValueError: `path` has no class subfolder or no readable image.

    Example:

    >>> x, y, names = load_image_folder("my_photos", 64)  # doctest: +SKIP
    """
    from PIL import Image

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
    images, labels = [], []
    for label, name in enumerate(class_names):
        files = _image_files(os.path.join(path, name))[:max_per_class]
        for file in files:
            with Image.open(file) as image:
                image = image.convert("RGB").resize(
                    (image_size, image_size), Image.BILINEAR
                )
                images.append(np.asarray(image, dtype=np.uint8))
            labels.append(label)
    if not images:
        raise ValueError(
            f"No images found in the class subfolders of {path} "
            f"({', '.join(class_names)}); expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}."
        )
    return np.stack(images), np.asarray(labels, dtype=np.uint8), class_names


def preprocess(
    x: np.ndarray, mode: str = "caffe", image_size: Optional[int] = None
) -> np.ndarray:
    """uint8 RGB images to float32 model inputs.

    Resizes (bilinear, in `keras.ops.image.resize`) to `image_size` when
    given and different, then scales:

    - `"none"`: pixel values as they are (0-255);
    - `"unit"`: divided by 255;
    - `"caffe"`, `"tf"`, `"torch"`: `keras.applications.imagenet_utils.
      preprocess_input` in that mode (`"caffe"` is what ResNet50's ImageNet
      weights expect).

    Args:
        x: `(n, h, w, 3)` images.
        mode: One of `PREPROCESSING`. Defaults to `"caffe"`.
        image_size: Optional output side.

    Returns:
        A float32 `(n, size, size, 3)` array.

    Example:

    >>> preprocess(np.full((1, 2, 2, 3), 255, np.uint8), "unit").max()
    np.float32(1.0)
    """
    if mode not in PREPROCESSING:
        raise ValueError(
            f"Unknown preprocessing {mode!r}; expected one of {PREPROCESSING}."
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
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
