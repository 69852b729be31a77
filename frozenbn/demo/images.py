"""Small real image data for the demo: shipped patches and user folders.

The demo needs two image domains, offline: a *source* domain to "pretrain"
a backbone on and a shifted *target* domain to fine-tune it on, each with a
train split and a held-out split. `build_demo_data` cuts them out of public
domain / CC0 photographs bundled with scikit-image (see `data/README.md`);
the result ships as `data/demo_data.npz` and `load_demo_data` reads it, so
the demo needs neither scikit-image nor a network at run time.

`load_image_folder` reads a user's own two-class folder instead.
"""

import os
from typing import NamedTuple
from typing import Optional

import numpy as np

from frozenbn._images import load_image_folder  # noqa: F401 (re-exported)

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "demo_data.npz")

# scikit-image sample images used for each domain and class. All are public
# domain or CC0 (see data/README.md) and ship inside the scikit-image wheel,
# so building needs no download.
SOURCE_IMAGES = {0: ("brick",), 1: ("gravel", "grass")}
TARGET_IMAGES = {0: ("chelsea", "coffee"), 1: ("astronaut", "rocket")}

# Fraction of each photograph's width (from the left) that train patches are
# cut from; held-out patches come from the rest, so no pixel is in both.
TRAIN_FRACTION = 0.6


class Split(NamedTuple):
    """Images and labels: `x` uint8 `(n, h, w, 3)`, `y` uint8 `(n,)`."""

    x: np.ndarray
    y: np.ndarray


class Domain(NamedTuple):
    """A `train` split and a disjoint `heldout` split of one domain."""

    train: Split
    heldout: Split


class DemoData(NamedTuple):
    """The demo's two domains: `source` (pretraining) and `target`."""

    source: Domain
    target: Domain


def load_demo_data(path: Optional[str] = None) -> DemoData:
    """Loads the shipped demo images (32x32 RGB uint8, two classes).

    Source domain: grayscale texture patches, brick (0) vs gravel and grass
    (1). Target domain: color photo patches with random lighting changes,
    a cat and a coffee cup (0) vs an astronaut and a rocket launch (1).
    Held-out patches come from parts of the photographs that no train patch
    touches.

    Args:
        path: Optional `.npz` file written by `build_demo_data`. Defaults
            to the file shipped with frozenbn.

    Returns:
        A `DemoData` of `Domain`s of `Split`s.

    Example:

    >>> from frozenbn.demo.data import load_demo_data
    >>> data = load_demo_data()
    >>> data.target.train.x.shape[1:], data.target.train.x.dtype
    ((32, 32, 3), dtype('uint8'))
    """
    path = DATA_FILE if path is None else path
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Demo data file not found: {path}. Reinstall frozenbn, or "
            "rebuild it with `frozenbn.demo.data.build_demo_data()` "
            "(needs scikit-image)."
        )
    with np.load(path) as arrays:
        return DemoData(
            *(
                Domain(*(_split(arrays, f"{domain}_{part}")
                         for part in ("train", "heldout")))
                for domain in ("source", "target")
            )
        )


def build_demo_data(
    path: Optional[str] = DATA_FILE,
    *,
    image_size: int = 32,
    source_train: int = 640,
    source_heldout: int = 128,
    target_train: int = 384,
    target_heldout: int = 192,
    seed: int = 1234,
) -> DemoData:
    """Cuts the demo images out of scikit-image's sample photographs.

    Each patch is a random square crop (a side of 48 to 160 pixels) resized
    to `image_size`, with anti-aliasing. Classes are balanced. Target
    patches also get a random brightness, contrast and color-balance change,
    like photos from different cameras. Deterministic for a given `seed`.

    Args:
        path: Where to write the compressed `.npz` file, or `None` to only
            return the arrays. Defaults to the shipped file.
        image_size: Side of the square patches, in pixels. Defaults to 32.
        source_train: Number of source train patches. Defaults to 640.
        source_heldout: Number of source held-out patches. Defaults to 128.
        target_train: Number of target train patches. Defaults to 384.
        target_heldout: Number of target held-out patches. Defaults to 192.
        seed: Seed of the crops and lighting changes. Defaults to 1234.

    Returns:
        The `DemoData` that was written.

    Example:

    >>> from frozenbn.demo.data import build_demo_data
    >>> data = build_demo_data(None, source_train=8, source_heldout=4,
    ...                        target_train=8, target_heldout=4)
    >>> data.source.train.x.shape
    (8, 32, 32, 3)
    """
    rng = np.random.default_rng(seed)
    counts = {
        "source": (source_train, source_heldout),
        "target": (target_train, target_heldout),
    }
    domains = {}
    for name, classes in (("source", SOURCE_IMAGES), ("target", TARGET_IMAGES)):
        photos = {label: [_sample_image(n) for n in names]
                  for label, names in classes.items()}
        splits = []
        for part, count in zip(("train", "heldout"), counts[name]):
            split = _patches(photos, part, count, image_size, rng)
            if name == "target":
                split = Split(_relight(split.x, rng), split.y)
            splits.append(split)
        domains[name] = Domain(*splits)
    data = DemoData(domains["source"], domains["target"])
    if path is not None:
        _save(data, path)
    return data


def split_heldout(
    x: np.ndarray, y: np.ndarray, fraction: float = 0.25, seed: int = 0
) -> Domain:
    """Splits images into a train and a held-out part, per class.

    Args:
        x: Images.
        y: Integer labels.
        fraction: Share of each class held out. Defaults to 0.25.
        seed: Shuffling seed. Defaults to 0.

    Returns:
        A `Domain`; every class keeps at least one train image.
    """
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for label in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == label))
        n_heldout = min(int(round(len(index) * fraction)), len(index) - 1)
        heldout.extend(index[:n_heldout])
        train.extend(index[n_heldout:])
    train, heldout = rng.permutation(train), rng.permutation(heldout)
    return Domain(Split(x[train], y[train]), Split(x[heldout], y[heldout]))


def _split(arrays, key: str) -> Split:
    return Split(arrays[f"{key}_x"], arrays[f"{key}_y"])


def _save(data: DemoData, path: str) -> None:
    arrays = {}
    for domain, splits in data._asdict().items():
        for part, split in splits._asdict().items():
            arrays[f"{domain}_{part}_x"] = split.x
            arrays[f"{domain}_{part}_y"] = split.y
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)


def _sample_image(name: str) -> np.ndarray:
    """A scikit-image sample photograph as float RGB in [0, 1]."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    image = image / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3]


def _patches(photos: dict, part: str, count: int, size: int, rng) -> Split:
    labels = np.arange(count) % len(photos)
    rng.shuffle(labels)
    x = np.stack([
        _crop(photos[label][rng.integers(len(photos[label]))], part, size, rng)
        for label in labels
    ])
    return Split(x, labels.astype(np.uint8))


def _crop(image: np.ndarray, part: str, size: int, rng) -> np.ndarray:
    from skimage.transform import resize

    height, width = image.shape[:2]
    split = int(width * TRAIN_FRACTION)
    left, right = (0, split) if part == "train" else (split, width)
    side = int(rng.integers(48, min(160, right - left, height) + 1))
    top = int(rng.integers(0, height - side + 1))
    start = int(rng.integers(left, right - side + 1))
    crop = image[top:top + side, start:start + side]
    crop = resize(crop, (size, size), anti_aliasing=True)
    return np.clip(np.round(crop * 255.0), 0, 255).astype(np.uint8)


def _relight(x: np.ndarray, rng) -> np.ndarray:
    """Random brightness, contrast and per-channel gain, per image."""
    n = len(x)
    gain = rng.uniform(0.6, 1.4, (n, 1, 1, 3))
    contrast = rng.uniform(0.5, 1.5, (n, 1, 1, 1))
    shift = rng.uniform(-40.0, 40.0, (n, 1, 1, 1))
    x = x.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean * gain + shift
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
