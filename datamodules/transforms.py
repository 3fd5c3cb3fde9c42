"""Shared pieces of the file-based classification datamodules.

* **Finding the data**: :func:`resolve_dataset_dir` accepts the dataset folder itself or its
  parent, and raises one :class:`DatasetNotFoundError` that names the folder, the expected
  layout and where to get the data.
* **Decoding**: :class:`ImageFileDataset` reads images with PIL (converted to RGB: a few
  Tiny-ImageNet and ImageNet files are greyscale or CMYK); a file PIL cannot read raises a
  ``RuntimeError`` that names it.
* **Augmentation**: the recipes' pipelines, built with **torchvision transforms v2**. One
  library for all classification data because torchvision is already a hard dependency of
  the networks, v2 runs on PIL images (fast resizing for ImageNet) and on uint8 tensors (the
  in-memory CIFAR arrays, no PIL round trip) alike, and it draws from torch's RNG, which
  Lightning's ``seed_everything(workers=True)`` seeds per loader worker. (albumentations is
  kept for segmentation, where image and mask must move together.)

Every pipeline ends with ``ToDtype(float32, scale=True)`` (pixels to ``[0, 1]``) and
``Normalize(mean, std)`` with the datamodule's class attributes; evaluation pipelines are
deterministic (no augmentation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetNotFoundError",
    "ImageFileDataset",
    "cifar_train_transform",
    "eval_transform",
    "imagenet_eval_transform",
    "imagenet_train_transform",
    "list_images",
    "load_rgb",
    "normalize",
    "resolve_dataset_dir",
    "tiny_imagenet_train_transform",
]

#: File suffixes (lower case) read as images in folder datasets.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


def resolve_dataset_dir(
    root: str | Path | None,
    folder_name: str,
    required: Iterable[str],
    *,
    dataset: str,
    layout: str,
    source: str,
) -> Path:
    """The dataset folder: ``root`` itself when it holds ``required``, else ``root/folder_name``.

    Args:
        root: what the user passed (the dataset folder or its parent).
        folder_name: the dataset folder's usual name (e.g. ``cifar-10-batches-py``).
        required: paths, relative to the dataset folder, that must exist.
        dataset: the dataset's name, for the message.
        layout: the expected layout, for the message.
        source: where to get the data, for the message.

    Raises:
        DatasetNotFoundError: neither candidate holds every required path; the message names
            the folder looked at, what is missing, the layout and the source.
    """
    required = list(required)
    if root is None:
        raise DatasetNotFoundError(
            f"{dataset}: no `root` given; pass the '{folder_name}' folder (or its parent).\n"
            f"Expected layout:\n{layout}\nGet it from {source}."
        )
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetNotFoundError(
            f"{dataset}: `root` {root.resolve()} is a file, not a folder; pass the "
            f"'{folder_name}' folder (or its parent)."
        )
    candidates = [root, root / folder_name]
    for cand in candidates:
        if all((cand / rel).exists() for rel in required):
            return cand
    # Report against the candidate that looks most like the dataset.
    best = max(candidates, key=lambda c: sum((c / r).exists() for r in required) + c.is_dir())
    missing = [r for r in required if not (best / r).exists()]
    what = "does not exist" if not best.is_dir() else f"lacks {', '.join(missing)}"
    raise DatasetNotFoundError(
        f"{dataset} not found: {best.resolve()} {what}. `root` may be the '{folder_name}' "
        f"folder or its parent.\nExpected layout:\n{layout}\nGet it from {source}."
    )


def list_images(folder: str | Path) -> list[str]:
    """Sorted names of the image files (:data:`IMAGE_EXTENSIONS`) directly in ``folder``."""
    with os.scandir(folder) as it:
        return sorted(
            e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB.

    Raises:
        RuntimeError: PIL cannot read the file (the message names it).
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise RuntimeError(f"cannot read image file {path}: {err}") from err


class ImageFileDataset(Dataset):
    """``(image, label)`` pairs read from image files.

    Paths and labels are held in two numpy arrays rather than a list of tuples: loader
    workers forked from the main process then share them without copying (touching Python
    objects' reference counts would copy the pages of a 1.28M-entry list into every worker).

    Args:
        samples: ``(path, label)`` pairs, in a fixed order.
        transform: applied to the PIL RGB image; must return a tensor.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable) -> None:
        self._paths = np.array([os.fsencode(p) for p, _ in samples], dtype=np.bytes_)
        self._labels = np.array([label for _, label in samples], dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path = os.fsdecode(self._paths[i])
        return self.transform(load_rgb(path)), int(self._labels[i])

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(path, label)`` of all samples, in order."""
        return [(os.fsdecode(p), int(y)) for p, y in zip(self._paths, self._labels)]

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in order."""
        return self._labels.tolist()


def normalize(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    """The common tail: to a float image in ``[0, 1]``, then per-channel normalization."""
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """No augmentation: normalization only (CIFAR, Tiny-ImageNet val/test)."""
    return v2.Compose(normalize(mean, std))


def cifar_train_transform(
    mean: Sequence[float], std: Sequence[float], size: int = 32, padding: int = 4
) -> v2.Compose:
    """RandomCrop(size, zero padding) + horizontal flip + normalization (CIFAR recipe)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomCrop(size, padding=padding),
            v2.RandomHorizontalFlip(),
            *normalize(mean, std),
        ]
    )


def tiny_imagenet_train_transform(
    mean: Sequence[float], std: Sequence[float], size: int = 64, padding: int = 4
) -> v2.Compose:
    """RandomCrop(64, pad 4) + horizontal flip + normalization (Tiny-ImageNet recipe)."""
    return cifar_train_transform(mean, std, size=size, padding=padding)


def imagenet_train_transform(
    mean: Sequence[float], std: Sequence[float], crop_size: int = 224
) -> v2.Compose:
    """RandomResizedCrop(224) + horizontal flip + normalization (ImageNet recipe)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(crop_size, antialias=True),
            v2.RandomHorizontalFlip(),
            *normalize(mean, std),
        ]
    )


def imagenet_eval_transform(
    mean: Sequence[float], std: Sequence[float], resize_size: int = 256, crop_size: int = 224
) -> v2.Compose:
    """Resize(256) (shorter side) + CenterCrop(224) + normalization (ImageNet evaluation)."""
    return v2.Compose(
        [
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(crop_size),
            *normalize(mean, std),
        ]
    )
