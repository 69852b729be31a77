"""Small real image data for the demo: two domains, shipped, rebuildable.

The demo needs, offline, a *source* domain to pretrain a backbone on and a
different *target* domain to fine-tune it on, each with a train and a
held-out split:

- source: handwritten digits (scikit-learn's copy of the UCI digits) in
  a random colour over patches of twelve public-domain / CC0 photographs
  and textures bundled with scikit-image (bricks, grass, gravel, a camera
  man, coins, the moon, printed pages, cells, the Hubble deep field, a
  stained tissue sample, a retina), colour-jittered, labelled 0-9: the
  "MNIST-M" construction of domain-adaptation papers. Pretraining on it
  learns digit shapes, as ImageNet pretraining learns what a user's
  photos show;
- target: other digits of the same set (no digit image is in both
  domains), "scanned" as dark ink on tinted paper with sensor noise,
  labelled 0-4 (0) vs 5-9 (1); the training split is imbalanced (3:1),
  the held-out split balanced. Its image statistics are far from the
  source's (plain paper, not photos), its content is not.

`build_demo_data` makes them (see `data/README.md`); the result ships as
`data/demo_data.npz` and `load_demo_data` reads it, so the demo needs
neither scikit-image nor scikit-learn at run time. `oversample` balances
a split the way the bug report did; `load_image_folder` and
`split_heldout` read a user's own two-class folder instead.
"""

import os
from typing import NamedTuple
from typing import Optional
from typing import Sequence

import numpy as np

from frozenbn._images import load_image_folder  # noqa: F401 (re-exported)

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "demo_data.npz")

SOURCE_IMAGES = (
    "brick", "grass", "gravel", "camera", "coins", "moon", "page", "text",
    "cell", "hubble_deep_field", "immunohistochemistry", "retina",
)
"""scikit-image sample pictures behind the source domain's digits."""

GRID = 2
"""Source pictures are cut into a GRID x GRID checkerboard: train
backgrounds come from one colour of cells, held-out backgrounds from the
other, so no pixel is in both."""


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
    """Loads the shipped demo images (32x32 RGB uint8).

    Args:
        path: Optional `.npz` file written by `build_demo_data`. Defaults
            to the file shipped with frozenbn.

    Returns:
        A `DemoData` of `Domain`s of `Split`s: source labels 0-9 (the
        digit), target labels 0/1 (digit 0-4 / 5-9).

    Example:

    >>> from frozenbn.demo.images import load_demo_data
    >>> data = load_demo_data()
    >>> data.target.train.x.shape[1:], data.target.train.x.dtype
    ((32, 32, 3), dtype('uint8'))
    """
    path = DATA_FILE if path is None else path
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Demo data file not found: {path}. Reinstall frozenbn, or "
            "rebuild it with `frozenbn.demo.images.build_demo_data()` "
            "(needs scikit-image and scikit-learn)."
        )
    with np.load(path) as arrays:
        return DemoData(*(
            Domain(*(Split(arrays[f"{domain}_{part}_x"],
                           arrays[f"{domain}_{part}_y"])
                     for part in ("train", "heldout")))
            for domain in ("source", "target")
        ))


def build_demo_data(
    path: Optional[str] = DATA_FILE,
    *,
    image_size: int = 32,
    source_train: int = 768,
    source_heldout: int = 128,
    target_train: Sequence[int] = (192, 64),
    target_heldout: int = 512,
    seed: int = 1234,
) -> DemoData:
    """Makes the demo images from scikit-image and scikit-learn data.

    Digits (8x8, ink 0-16) are upsampled to `image_size` (bilinear). The
    target's are drawn as ink on paper with a per-image exposure change and
    Gaussian noise. The source's are drawn in a random colour over a random
    square crop of a picture (a side of 40 pixels up to a checkerboard
    cell, resized with anti-aliasing), then given a random brightness,
    contrast and colour balance. The target's digits are drawn first; the
    source's come from the digits left. Deterministic for a given `seed`.

    Args:
        path: Where to write the compressed `.npz` file, or `None` to only
            return the arrays. Defaults to the shipped file.
        image_size: Side of the square images, in pixels. Defaults to 32.
        source_train: Source train digits.
        source_heldout: Source held-out digits.
        target_train: Target train digits per class: `(n_0, n_1)`.
            Defaults to `(192, 64)`, imbalanced 3:1.
        target_heldout: Target held-out digits, balanced.
        seed: Seed of the crops, jitter and the digits drawn.

    Returns:
        The `DemoData` that was written.

    Example:

    >>> from frozenbn.demo.images import build_demo_data
    >>> data = build_demo_data(None, source_train=12, source_heldout=12,
    ...                        target_train=(4, 2), target_heldout=4)
    >>> data.source.train.x.shape, list(data.target.train.y).count(1)
    ((12, 32, 32, 3), 2)
    """
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    target, used = _target_domain(digits, target_train, target_heldout,
                                  image_size, rng)
    left = rng.permutation(np.setdiff1d(np.arange(len(digits.target)), used))
    if source_train + source_heldout > len(left):
        raise ValueError(
            f"Only {len(left)} digits are left for the source domain; "
            f"asked for {source_train} + {source_heldout}."
        )
    pictures = [_sample_image(name) for name in SOURCE_IMAGES]
    chosen = {"train": left[:source_train],
              "heldout": left[source_train:source_train + source_heldout]}
    source = Domain(*(
        _source_split(digits, chosen[part], pictures, part, image_size, rng)
        for part in ("train", "heldout")
    ))
    data = DemoData(source, target)
    if path is not None:
        _save(data, path)
    return data


def oversample(split: Split, seed: int = 0) -> Split:
    """Repeats the rarer classes until every class is as frequent, shuffled.

    This is what the bug report did with its imbalanced data: every epoch
    sees balanced batches, and each minority image several times.

    Args:
        split: Images and integer labels.
        seed: Seed of the repetition order and the shuffle.

    Returns:
        A `Split` with `n_classes * max_count` images.

    Example:

    >>> split = Split(np.zeros((4, 1, 1, 3), np.uint8),
    ...               np.array([0, 0, 0, 1], np.uint8))
    >>> np.bincount(oversample(split).y).tolist()
    [3, 3]
    """
    rng = np.random.default_rng(seed)
    labels = np.unique(split.y)
    indices = [np.flatnonzero(split.y == label) for label in labels]
    largest = max(len(index) for index in indices)
    chosen = np.concatenate([
        np.concatenate([index, rng.choice(index, largest - len(index))])
        for index in indices
    ])
    chosen = rng.permutation(chosen)
    return Split(split.x[chosen], split.y[chosen])


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


def _save(data: DemoData, path: str) -> None:
    arrays = {}
    for domain, splits in data._asdict().items():
        for part, split in splits._asdict().items():
            arrays[f"{domain}_{part}_x"] = split.x
            arrays[f"{domain}_{part}_y"] = split.y
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)


def _sample_image(name: str) -> np.ndarray:
    """A scikit-image sample picture as float RGB in [0, 1]."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    image = image / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3]


def _source_split(digits, chosen, pictures, part, size, rng) -> Split:
    """Digits `chosen` in a random colour over crops of random pictures."""
    backgrounds = np.stack([
        _crop(pictures[rng.integers(len(pictures))], part, size, rng)
        for _ in chosen
    ]).astype(np.float32)
    ink = _upsample(digits.images[chosen], size)
    colour = rng.uniform(0.0, 255.0, (len(chosen), 1, 1, 3))
    x = backgrounds * (1.0 - ink) + colour * ink
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return Split(_jitter(x, rng), digits.target[chosen].astype(np.uint8))


def _crop(image: np.ndarray, part: str, size: int, rng) -> np.ndarray:
    """A random square crop inside one checkerboard cell of `part`."""
    from skimage.transform import resize

    height, width = image.shape[:2]
    cells = [(i, j) for i in range(GRID) for j in range(GRID)
             if ((i + j) % 2 == 0) == (part == "train")]
    i, j = cells[rng.integers(len(cells))]
    top, bottom = i * height // GRID, (i + 1) * height // GRID
    left, right = j * width // GRID, (j + 1) * width // GRID
    side = int(rng.integers(40, min(bottom - top, right - left) + 1))
    y0 = int(rng.integers(top, bottom - side + 1))
    x0 = int(rng.integers(left, right - side + 1))
    crop = resize(image[y0:y0 + side, x0:x0 + side], (size, size),
                  anti_aliasing=True)
    return np.clip(np.round(crop * 255.0), 0, 255).astype(np.uint8)


def _jitter(x: np.ndarray, rng) -> np.ndarray:
    """Random brightness, contrast and per-channel gain, per image."""
    n = len(x)
    gain = rng.uniform(0.6, 1.4, (n, 1, 1, 3))
    contrast = rng.uniform(0.6, 1.4, (n, 1, 1, 1))
    shift = rng.uniform(-30.0, 30.0, (n, 1, 1, 1))
    x = x.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean * gain + shift
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


PAPER = (235.0, 225.0, 200.0)
INK = (40.0, 40.0, 90.0)


def _target_domain(digits, train_counts, heldout, size, rng) -> tuple:
    """The target `Domain` and the indices of the digits it uses."""
    labels = (digits.target >= 5).astype(np.uint8)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)]
    half = heldout // 2
    train = np.concatenate([index[:n] for index, n
                            in zip(per_class, train_counts)])
    held = np.concatenate([index[n:n + half] for index, n
                           in zip(per_class, train_counts)])
    domain = Domain(*(
        Split(_scan(digits.images[chosen], size, rng), labels[chosen])
        for chosen in (rng.permutation(train), rng.permutation(held))
    ))
    return domain, np.concatenate([train, held])


def _scan(digits: np.ndarray, size: int, rng) -> np.ndarray:
    """8x8 ink counts (0-16) to `size` RGB "scans": ink on tinted paper."""
    ink = _upsample(digits, size)
    pixels = np.asarray(PAPER) * (1.0 - ink) + np.asarray(INK) * ink
    pixels += rng.uniform(-15.0, 15.0, (len(pixels), 1, 1, 1))
    pixels += rng.normal(0.0, 6.0, pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _upsample(digits: np.ndarray, size: int) -> np.ndarray:
    """8x8 ink counts (0-16) to `(n, size, size, 1)` ink in [0, 1]."""
    from skimage.transform import resize

    return np.stack([resize(d / 16.0, (size, size), order=1,
                            anti_aliasing=False) for d in digits])[..., None]
