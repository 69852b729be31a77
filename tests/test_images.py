"""Tests of the image folder reader and preprocessing (`frozenbn._images`)."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from frozenbn._images import load_image_folder
from frozenbn._images import preprocess


def _save(path, pixels, mode=None):
    """Saves `pixels` (an array, or one gray value) as an image at `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if np.ndim(pixels) == 0:
        pixels = np.full((4, 4, 3), pixels, np.uint8)
    image = (Image.frombytes(mode, pixels.shape[::-1], pixels.tobytes())
             if mode else Image.fromarray(pixels))
    image.save(path)


def test_class_folders_are_read_recursively_in_keras_order(tmp_path):
    _save(tmp_path / "cats" / "b.png", 10)
    _save(tmp_path / "cats" / "2023" / "a.png", 20)
    _save(tmp_path / "cats" / "2023" / "jan" / "a.png", 30)
    _save(tmp_path / "dogs" / "2024" / "x" / "c.png", 40)
    # Hidden files and folders are skipped (macOS writes `._name.png`).
    _save(tmp_path / "cats" / ".thumbs" / "t.png", 99)
    (tmp_path / "cats" / "._b.png").write_bytes(b"not an image")

    x, y, names = load_image_folder(str(tmp_path), 4)

    assert names == ["cats", "dogs"]
    assert x.shape == (4, 4, 4, 3)
    # Folder by folder (cats, cats/2023, cats/2023/jan), as Keras lists them.
    assert x[:, 0, 0, 0].tolist() == [10, 20, 30, 40]
    assert y.tolist() == [0, 0, 0, 1]
    x, y, _ = load_image_folder(str(tmp_path), 4, max_per_class=2)
    assert x[:, 0, 0, 0].tolist() == [10, 20, 40]


def test_the_order_is_the_one_of_keras_image_dataset_from_directory(
        tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    for i, name in enumerate(["a/z.png", "a/y/b.png", "a/y-1/c.png",
                              "b/q/r/d.png", "b/e.png"]):
        _save(tmp_path / name, 10 * i)
    x, y, _ = load_image_folder(str(tmp_path), 4)
    dataset = keras.utils.image_dataset_from_directory(
        str(tmp_path), image_size=(4, 4), shuffle=False, batch_size=None,
        verbose=False)
    expected = [(int(image[0, 0, 0]), int(label)) for image, label in dataset]
    assert list(zip(x[:, 0, 0, 0].tolist(), y.tolist())) == expected
    assert len(expected) == 5


@pytest.mark.parametrize("mode, ext", [
    ("I;16", "png"), ("I;16B", "tif"), ("I", "tif"),
])
def test_16_bit_images_keep_their_top_byte(tmp_path, mode, ext):
    values = np.array([[0, 255, 256, 511], [32768, 40000, 65280, 65535]])
    values = np.concatenate([values, values[::-1]])  # 4 x 4: no resizing
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": "<i4"}[mode]
    _save(tmp_path / "a" / f"img.{ext}", values.astype(dtype), mode)

    x, _, _ = load_image_folder(str(tmp_path), 4)

    # Pillow's convert("RGB") clipped: everything but 0 read as 255.
    expected = [[0, 0, 1, 1], [128, 156, 255, 255]]
    assert x[0, :2, :, 0].tolist() == expected
    assert x[0, ..., 0].tolist() == (values >> 8).tolist()
    np.testing.assert_array_equal(x[0, ..., 0], x[0, ..., 2])


def test_16_bit_png_reads_as_tensorflow_decodes_it(tmp_path):
    tf = pytest.importorskip("tensorflow")
    pixels = np.random.default_rng(0).integers(0, 65536, (32, 32))
    _save(tmp_path / "a" / "img.png", pixels.astype("<u2"), "I;16")

    x, _, _ = load_image_folder(str(tmp_path), 32)

    decoded = tf.io.decode_png(tf.io.read_file(str(tmp_path / "a" / "img.png")),
                               channels=3).numpy()
    np.testing.assert_array_equal(x[0], decoded)
    assert abs(x.mean() - pixels.mean() / 257) < 0.5


def test_float_images_are_read_as_0_to_1(tmp_path):
    values = np.tile(np.array([0.0, 0.5, 1.0, 2.0], np.float32), (4, 1))
    _save(tmp_path / "a" / "img.tif", values, "F")
    x, _, _ = load_image_folder(str(tmp_path), 4)
    # Pillow's convert("RGB") clipped: [0, 0, 1, 2], nearly black.
    assert x[0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_an_empty_class_folder_keeps_its_label_and_warns(tmp_path):
    _save(tmp_path / "cats" / "0.png", 10)
    _save(tmp_path / "dogs" / "0.png", 20)
    os.makedirs(tmp_path / "_unsorted")
    with pytest.warns(UserWarning) as record:
        x, y, names = load_image_folder(str(tmp_path), 4)
    assert names == ["_unsorted", "cats", "dogs"]
    assert y.tolist() == [1, 2]
    assert [str(w.message) for w in record] == [
        f"Class folder(s) _unsorted in {tmp_path} hold no images but still "
        "take a label (_unsorted=0), as in "
        "keras.utils.image_dataset_from_directory: the images are labelled "
        "cats=1, dogs=2. The model's labels must match; remove the empty "
        "folder(s), or move images into them."
    ]
    os.rmdir(tmp_path / "_unsorted")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, y, _ = load_image_folder(str(tmp_path), 4)
    assert y.tolist() == [0, 1]


def test_channels_1_reads_grayscale(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    _save(tmp_path / "a" / "red.png", red)
    _save(tmp_path / "b" / "gray.png", 100)

    x, y, _ = load_image_folder(str(tmp_path), 4, channels=1)

    assert x.shape == (2, 4, 4, 1) and x.dtype == np.uint8
    # ITU-R 601-2 luma: 255 * 299 / 1000.
    assert x[:, 0, 0, 0].tolist() == [76, 100]
    rgb, _, _ = load_image_folder(str(tmp_path), 4)
    assert rgb.shape == (2, 4, 4, 3)
    assert rgb[0, 0, 0].tolist() == [255, 0, 0]


def test_channels_errors(tmp_path):
    _save(tmp_path / "a" / "0.png", 10)
    with pytest.raises(ValueError, match=r"^`channels` must be 1 \(grayscale"
                       r"\) or 3 \(RGB\)\. Received: channels=4$"):
        load_image_folder(str(tmp_path), 4, channels=4)
    with pytest.raises(TypeError, match=r"Received: channels='3' of type str"):
        load_image_folder(str(tmp_path), 4, channels="3")


def test_preprocess_grayscale():
    x = np.full((2, 4, 4, 1), 255, np.uint8)
    assert preprocess(x, "unit").shape == (2, 4, 4, 1)
    assert preprocess(x, "unit").max() == 1.0
    assert preprocess(x, "tf").min() == 1.0
    assert preprocess(x, "none", 8).shape == (2, 8, 8, 1)
    for mode in ("caffe", "torch"):
        with pytest.raises(ValueError, match=(
                f"^Preprocessing '{mode}' normalizes each RGB channel with "
                r"ImageNet's statistics, so it needs 3-channel images\. "
                r"Received: images with 1 channel\(s\)\. Use 'unit' \(0\.\.1"
                r"\), 'tf' \(-1\.\.1\) or 'none' \(0\.\.255\) for them\.$")):
            preprocess(x, mode)
    rgb = np.full((1, 2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(preprocess(rgb, "caffe")[0, 0, 0],
                               [255 - 103.939, 255 - 116.779, 255 - 123.68],
                               rtol=1e-6)
