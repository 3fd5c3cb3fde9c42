"""Tiny on-disk datasets in the exact official formats, for tests and benchmarks.

Each ``make_fake_*`` writes a dataset folder under ``parent`` and returns its path. Pixel
content is seeded noise, except where a test needs to recognise an image: CIFAR images can
be made constant, and Tiny-ImageNet / ImageNet images are flat colours per class
(:func:`class_colour`), so a decoded image tells its class (JPEG keeps flat colours to
within a few levels).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.splits import imagenet_val_names

__all__ = [
    "TINY_WNIDS",
    "class_colour",
    "make_fake_cifar10",
    "make_fake_cifar100",
    "make_fake_imagenet",
    "make_fake_tiny_imagenet",
]

#: wnids of the fake Tiny-ImageNet, in ``wnids.txt`` order (deliberately not sorted).
TINY_WNIDS = ("n03000000", "n01000000", "n04000000", "n02000000")


def class_colour(label: int) -> tuple[int, int, int]:
    """A flat RGB colour that identifies ``label`` (distinct for labels < 100)."""
    return (20 + 2 * label, 200 - label, (50 * label) % 251)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_images(rng: np.random.Generator, n: int, value: int | None) -> np.ndarray:
    if value is not None:
        return np.full((n, 3072), value, np.uint8)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def make_fake_cifar10(
    parent: str | Path,
    per_batch: int = 20,
    n_test: int = 20,
    value: int | None = None,
    seed: int = 0,
) -> Path:
    """Write ``parent/cifar-10-batches-py`` with 5 train batches, ``test_batch``, meta.

    Labels cycle ``0..9`` (``per_batch`` divisible by 10 gives balanced classes). ``data``
    rows are ``R(1024) G(1024) B(1024)`` uint8 like the official files; ``value`` makes
    every pixel that value.
    """
    rng = np.random.default_rng(seed)
    folder = Path(parent) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(1, 6):
        _dump(
            folder / f"data_batch_{b}",
            {
                "batch_label": f"training batch {b} of 5",
                "labels": [i % 10 for i in range(per_batch)],
                "data": _cifar_images(rng, per_batch, value),
                "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
            },
        )
    _dump(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [i % 10 for i in range(n_test)],
            "data": _cifar_images(rng, n_test, value),
            "filenames": [f"test_{i}.png" for i in range(n_test)],
        },
    )
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072},
    )
    return folder


def make_fake_cifar100(
    parent: str | Path, n_train: int = 200, n_test: int = 40, seed: int = 0
) -> Path:
    """Write ``parent/cifar-100-python`` with ``train``, ``test`` and ``meta`` (fine labels).

    Fine labels are ``(7 * i) % 100``, coarse labels ``fine // 5``.
    """
    rng = np.random.default_rng(seed)
    folder = Path(parent) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [(7 * i) % 100 for i in range(n)]
        _dump(
            folder / name,
            {
                "filenames": [f"{name}_{i}.png" for i in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": _cifar_images(rng, n, None),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)],
        },
    )
    return folder


def _save_jpeg(
    path: Path,
    size: tuple[int, int],
    colour: tuple[int, int, int],
    rng: np.random.Generator | None = None,
) -> None:
    """A flat ``colour`` image, or with ``rng`` a photo-like one (smooth texture + grain)."""
    if rng is None:
        Image.new("RGB", size, colour).save(path, format="JPEG", quality=95)
        return
    w, h = size
    coarse = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
    grain = rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
    pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def make_fake_tiny_imagenet(
    parent: str | Path,
    train_per_class: int = 10,
    val_per_class: int = 3,
    size: int = 64,
    textured: bool = False,
) -> Path:
    """Write ``parent/tiny-imagenet-200`` with the 4 classes of :data:`TINY_WNIDS`.

    Image colours follow the *sorted* wnid index (the datamodule's label); ``textured``
    writes photo-like random images instead (for benchmarks). The first training image of
    the first class is saved greyscale (as some official images are).
    """
    rng = np.random.default_rng(0) if textured else None
    folder = Path(parent) / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    label = {w: i for i, w in enumerate(sorted(TINY_WNIDS))}
    for wnid in TINY_WNIDS:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for i in range(train_per_class):
            path = images / f"{wnid}_{i}.JPEG"
            _save_jpeg(path, (size, size), class_colour(label[wnid]), rng)
            boxes.append(f"{path.name}\t0\t0\t{size - 1}\t{size - 1}")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    first = folder / "train" / TINY_WNIDS[0] / "images" / f"{TINY_WNIDS[0]}_0.JPEG"
    Image.open(first).convert("L").save(first, format="JPEG", quality=95)
    lines = []
    for j in range(val_per_class * len(TINY_WNIDS)):
        wnid = TINY_WNIDS[j % len(TINY_WNIDS)]
        name = f"val_{j}.JPEG"
        _save_jpeg(folder / "val" / "images" / name, (size, size), class_colour(label[wnid]), rng)
        lines.append(f"{name}\t{wnid}\t0\t0\t{size - 1}\t{size - 1}")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_fake_imagenet(
    parent: str | Path,
    n_classes: int = 3,
    train_per_class: int = 4,
    val_per_class: int = 4,
    size: tuple[int, int] = (40, 30),
    textured: bool = False,
) -> Path:
    """Write ``parent/imagenet`` with ``train/<wnid>/`` and ``val/<wnid>/`` class folders.

    Val images get official file names; half of each class's are listed in the committed
    validation split, half are not (so both splits are non-empty). Images are flat class
    colours, or photo-like random images with ``textured`` (for benchmarks).
    """
    rng = np.random.default_rng(0) if textured else None
    folder = Path(parent) / "imagenet"
    listed = imagenet_val_names()
    listed_set = set(listed)
    unlisted = (
        f"ILSVRC2012_val_{i:08d}.JPEG"
        for i in range(1, 50_001)
        if f"ILSVRC2012_val_{i:08d}.JPEG" not in listed_set
    )
    listed_iter = iter(listed)
    for c in range(n_classes):
        wnid = f"n{c + 1:08d}"
        (folder / "train" / wnid).mkdir(parents=True)
        (folder / "val" / wnid).mkdir(parents=True)
        for i in range(train_per_class):
            _save_jpeg(folder / "train" / wnid / f"{wnid}_{i}.JPEG", size, class_colour(c), rng)
        for i in range(val_per_class):
            name = next(listed_iter) if i % 2 == 0 else next(unlisted)
            _save_jpeg(folder / "val" / wnid / name, size, class_colour(c), rng)
    return folder
