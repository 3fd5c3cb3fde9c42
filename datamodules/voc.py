"""PASCAL VOC 2012 semantic segmentation (21 classes, void = 255) from the official tree.

``root`` is the ``VOC2012`` folder itself, its parent, or the parent of ``VOCdevkit``
(``root``, ``root/VOC2012`` and ``root/VOCdevkit/VOC2012`` are tried, in that order).
Layout read::

    VOC2012/
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png            palette PNGs: class ids 0..20, 255 = void
      ImageSets/Segmentation/train.txt      1,464 ids, one a line
      ImageSets/Segmentation/val.txt        1,449 ids
      # optional, the SBD-augmented training set ("train_aug"):
      ImageSets/Segmentation/train_aug.txt  10,582 ids (or DeepLab-style "<img> <mask>" lines)
      SegmentationClassAug/<id>.png         single-channel PNGs of class ids

Masks are read **without** any mode conversion: ``np.array(Image.open(path))`` of a palette
PNG gives the palette indices, which are the class ids (converting to RGB would give the
colours).

Splits (recipe):

* **train**: the ids of ``train.txt`` (``train_list="train"``) or of ``train_aug.txt`` with
  masks from ``SegmentationClassAug/`` (``"train_aug"``; ``"auto"`` picks it when both exist),
  minus any id of the official ``val.txt`` (SBD overlaps VOC val), minus the validation split;
* **val** (model selection, temperature scaling): carved from the train ids by
  :func:`hash_split`: the ``n_val`` ids with the smallest ``sha1(f"{split_seed}:{id}")``, so
  every copy of the tree splits the same way, whatever the list order, machine or library
  version;
* **test**: the official ``val.txt`` (masks from ``SegmentationClass/``).

Augmentation: :func:`~datamodules.segmentation_transforms.voc_train_transform` for train,
:func:`~datamodules.segmentation_transforms.voc_eval_transform` for val and test (see that
module for the geometry and the per-sample reseeding from torch's generator).

Errors: a layout problem (missing folder, list file, or a listed id without its image or
mask; checked for every listed id at setup) raises one
:class:`~datamodules.transforms.DatasetNotFoundError` naming what is missing; a content
problem found when a sample is read (corrupt file, mask label outside ``0..20`` and ``255``,
image and mask of different sizes) raises one ``ValueError`` naming the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import CalibrationDataModule
from datamodules.segmentation_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationTransform,
    voc_eval_transform,
    voc_train_transform,
)
from datamodules.splits import split_count
from datamodules.transforms import DatasetNotFoundError

__all__ = [
    "VOC_CLASS_NAMES",
    "SegmentationFileDataset",
    "VOCSegmentationDataModule",
    "hash_split",
    "read_id_list",
]

VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

_LISTS = "ImageSets/Segmentation"


def read_id_list(path: Path) -> list[str]:
    """The image ids of a list file, one a line (``<id>`` or ``<image path> <mask path>``).

    Raises:
        DatasetNotFoundError: the file lists no id.
    """
    ids = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetNotFoundError(f"{path} lists no image ids (one id a line expected).")
    return ids


def hash_split(ids: Sequence[str], val_split: float, seed: int) -> tuple[list[str], list[str]]:
    """Split ids into ``(train, val)`` by a hash of ``(seed, id)``; both sorted.

    The ``n_val`` ids (``round(val_split * n)`` for a fraction, else the count) with the
    smallest ``sha1(f"{seed}:{id}")`` are held out. It depends only on the set of ids, so
    any copy of the dataset splits the same way on any machine.

    Raises:
        ValueError: the split would leave one side empty.
    """
    ids = sorted(set(ids))
    n_val = split_count(val_split, len(ids))
    ranked = sorted(ids, key=lambda i: (hashlib.sha1(f"{seed}:{i}".encode()).hexdigest(), i))
    val = set(ranked[:n_val])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def _read(path: Path, kind: str) -> tuple[np.ndarray, str]:
    """The pixels of an image file (RGB for ``kind="image"``, as stored otherwise), its mode."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            if kind == "image" and mode != "RGB":
                img = img.convert("RGB")
            return np.asarray(img), mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read {kind} file {path}: {err}") from err


class SegmentationFileDataset(Dataset):
    """``(image, mask)`` pairs read from ``<image_dir>/<id>.jpg`` and ``<mask_dir>/<id>.png``.

    Args:
        ids: the image ids, in order.
        image_dir: folder of the RGB images (read with PIL, converted to RGB).
        mask_dir: folder of the masks (palette or greyscale PNGs of class ids, read as is).
        transform: the pipeline (:mod:`datamodules.segmentation_transforms`).
        train: reseed ``transform`` before every sample with a seed drawn from torch's
            global generator (random augmentation reproducible from torch's seed).
        num_classes: valid labels are ``0 .. num_classes - 1`` and ``ignore_index``.
        ignore_index: the void label (``None``: none).
        image_suffix: file suffix of the images.
        mask_suffix: file suffix of the masks.

    Returns (per item) a float32 ``(3, H, W)`` image and an int64 ``(H, W)`` mask.

    Raises (when an item is read) ``ValueError`` naming the file: unreadable or corrupt
    file, a mask that is not single-channel, a label outside the valid ones, or image and
    mask of different sizes.
    """

    def __init__(
        self,
        ids: Sequence[str],
        image_dir: str | Path,
        mask_dir: str | Path,
        transform: SegmentationTransform,
        train: bool = False,
        num_classes: int = 21,
        ignore_index: int | None = 255,
        image_suffix: str = ".jpg",
        mask_suffix: str = ".png",
    ) -> None:
        # A numpy array, not a list: loader workers share it without copying pages.
        self._ids = np.array(list(ids), dtype=np.str_)
        self.image_dir, self.mask_dir = Path(image_dir), Path(mask_dir)
        self.transform, self.train = transform, train
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.image_suffix, self.mask_suffix = image_suffix, mask_suffix

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """The image ids, in order."""
        return self._ids.tolist()

    def paths(self, i: int) -> tuple[Path, Path]:
        """The image and mask paths of item ``i``."""
        name = str(self._ids[i])
        return (
            self.image_dir / f"{name}{self.image_suffix}",
            self.mask_dir / f"{name}{self.mask_suffix}",
        )

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i`` untransformed: RGB ``(H, W, 3)`` uint8 and ``(H, W)`` uint8 class ids."""
        image_path, mask_path = self.paths(i)
        image, _ = _read(image_path, "image")
        mask, mode = _read(mask_path, "mask")
        if mode not in ("P", "L"):
            raise ValueError(
                f"mask file {mask_path} has PIL mode {mode!r}; expected a palette ('P') or "
                "greyscale ('L') PNG whose pixel values are the class ids."
            )
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask file {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}; they must match."
            )
        bad = mask >= self.num_classes
        if self.ignore_index is not None:
            bad &= mask != self.ignore_index
        if bad.any():
            values = np.unique(mask[bad]).tolist()
            void = "" if self.ignore_index is None else f" and {self.ignore_index} (void)"
            raise ValueError(
                f"mask file {mask_path} holds label value(s) {values} outside the classes "
                f"0..{self.num_classes - 1}{void}."
            )
        return image, mask

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.read(i)
        if self.train:
            self.transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
        return self.transform(image, mask)


class VOCSegmentationDataModule(CalibrationDataModule):
    """PASCAL VOC 2012 segmentation: train (or train_aug) / seeded val carved from it / val.

    Args:
        root: the ``VOC2012`` folder, its parent, or the parent of ``VOCdevkit``.
        batch_size: training batch size (per process).
        eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader workers.
        val_split: fraction (``< 1``) or count (``>= 1``) of the train ids held out as the
            validation split (by :func:`hash_split`).
        split_seed: seed of that split.
        train_list: ``"train"`` (1,464 ids), ``"train_aug"`` (SBD-augmented, needs
            ``train_aug.txt`` and ``SegmentationClassAug/``) or ``"auto"`` (``train_aug``
            when both exist, else ``train``).
        crop_size: side of the square training crop.
        train_max_size: the longer side is resized to this before the training crop.
        eval_size: val/test images: longer side resized to this, padded to a square.
        pin_memory: pin host memory in the loaders.
    """

    num_classes: ClassVar[int] = 21
    ignore_index: ClassVar[int | None] = 255
    class_names: ClassVar[tuple[str, ...] | None] = VOC_CLASS_NAMES
    mean: ClassVar[tuple[float, ...]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = IMAGENET_STD
    dataset_name: ClassVar[str] = "PASCAL VOC 2012"
    source: ClassVar[str] = (
        "the PASCAL VOC2012 page (host.robots.ox.ac.uk, 'VOC2012' -> "
        "VOCtrainval_11-May-2012.tar; untar it); train_aug: the SBD-augmented masks "
        "('SegmentationClassAug', as distributed with DeepLab) and their train_aug.txt list"
    )
    layout: ClassVar[str] = (
        "  VOC2012/JPEGImages/<id>.jpg\n"
        "  VOC2012/SegmentationClass/<id>.png\n"
        "  VOC2012/ImageSets/Segmentation/train.txt\n"
        "  VOC2012/ImageSets/Segmentation/val.txt\n"
        "  (train_aug, optional: VOC2012/ImageSets/Segmentation/train_aug.txt and "
        "VOC2012/SegmentationClassAug/<id>.png)"
    )

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_split: float = 0.1,
        split_seed: int = 0,
        train_list: str = "auto",
        crop_size: int = 512,
        train_max_size: int = 640,
        eval_size: int = 480,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split=val_split,
            split_seed=split_seed,
            pin_memory=pin_memory,
        )
        if train_list not in ("auto", "train", "train_aug"):
            raise ValueError(
                f"`train_list` must be 'auto', 'train' or 'train_aug'; got {train_list!r}."
            )
        for name, value in (
            ("crop_size", crop_size),
            ("train_max_size", train_max_size),
            ("eval_size", eval_size),
        ):
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1; got {value}.")
        self.train_list = train_list
        self.crop_size = crop_size
        self.train_max_size = train_max_size
        self.eval_size = eval_size

    # --- the files --------------------------------------------------------------------------

    def dataset_dir(self) -> Path:
        """The ``VOC2012`` folder; raises ``DatasetNotFoundError`` when the layout is wrong."""
        return self._locate(self.root)

    def _locate(self, root: str | Path | None) -> Path:
        required = ("JPEGImages", "SegmentationClass", f"{_LISTS}/train.txt", f"{_LISTS}/val.txt")
        name = self.dataset_name
        if root is None:
            raise DatasetNotFoundError(
                f"{name}: no `root` given; pass the 'VOC2012' folder (or a folder holding "
                f"'VOC2012' or 'VOCdevkit/VOC2012').\nExpected layout:\n{self.layout}\n"
                f"Get it from {self.source}."
            )
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise DatasetNotFoundError(
                f"{name}: `root` {root.resolve()} is a file, not a folder; pass the 'VOC2012' "
                "folder (or its parent)."
            )
        candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
        for cand in candidates:
            if all((cand / rel).exists() for rel in required):
                return cand
        best = max(candidates, key=lambda c: sum((c / r).exists() for r in required) + c.is_dir())
        missing = [r for r in required if not (best / r).exists()]
        what = "does not exist" if not best.is_dir() else f"lacks {', '.join(missing)}"
        raise DatasetNotFoundError(
            f"{name} not found: {best.resolve()} {what}. `root` may be the 'VOC2012' folder, "
            f"its parent, or the parent of 'VOCdevkit'.\nExpected layout:\n{self.layout}\n"
            f"Get it from {self.source}."
        )

    def resolved_train_list(self, folder: Path) -> str:
        """``"train"`` or ``"train_aug"``: what ``train_list`` means for this tree."""
        aug = [folder / _LISTS / "train_aug.txt", folder / "SegmentationClassAug"]
        if self.train_list == "auto":
            return "train_aug" if all(p.exists() for p in aug) else "train"
        if self.train_list == "train_aug":
            missing = [str(p) for p in aug if not p.exists()]
            if missing:
                raise DatasetNotFoundError(
                    f"{self.dataset_name}: train_list='train_aug' but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} missing (use train_list='train' "
                    f"or 'auto' without them).\nExpected layout:\n{self.layout}\n"
                    f"Get it from {self.source}."
                )
        return self.train_list

    def _check_files(self, ids: Sequence[str], folder: Path, suffix: str, listed_in: Path) -> None:
        missing = [i for i in ids if not (folder / f"{i}{suffix}").exists()]
        if missing:
            more = f" (and {len(missing) - 1} more listed id(s) lack theirs)" if missing[1:] else ""
            raise DatasetNotFoundError(
                f"{self.dataset_name}: {folder / (missing[0] + suffix)} is missing; id "
                f"{missing[0]!r} is listed in {listed_in}{more}.\n"
                f"Expected layout:\n{self.layout}"
            )

    def train_mask_dir(self) -> Path:
        """The mask folder of the train (and val) ids: ``SegmentationClass[Aug]``."""
        folder = self.dataset_dir()
        aug = self.resolved_train_list(folder) == "train_aug"
        return folder / ("SegmentationClassAug" if aug else "SegmentationClass")

    def split_ids(self) -> tuple[list[str], list[str], list[str]]:
        """The ``(train, val, test)`` ids, each sorted.

        Raises:
            DatasetNotFoundError: a list file lists nothing, or a listed id lacks its image
                or mask (every id is checked).
        """
        folder = self.dataset_dir()
        which = self.resolved_train_list(folder)
        test_list = folder / _LISTS / "val.txt"
        test_ids = sorted(set(read_id_list(test_list)))
        train_list = folder / _LISTS / f"{which}.txt"
        held = set(test_ids)
        train_all = sorted({i for i in read_id_list(train_list) if i not in held})
        if not train_all:
            raise DatasetNotFoundError(
                f"{self.dataset_name}: every id of {train_list} is in {test_list}; no training "
                "images are left."
            )
        self._check_files(train_all, folder / "JPEGImages", ".jpg", train_list)
        self._check_files(train_all, self.train_mask_dir(), ".png", train_list)
        self._check_files(test_ids, folder / "JPEGImages", ".jpg", test_list)
        self._check_files(test_ids, folder / "SegmentationClass", ".png", test_list)
        train_ids, val_ids = hash_split(train_all, self.val_split, self.split_seed)
        return train_ids, val_ids, test_ids

    def prepare_data(self) -> None:
        """Check the folder layout (nothing is downloaded)."""
        self.dataset_dir()

    # --- the datasets -----------------------------------------------------------------------

    def train_transform(self) -> SegmentationTransform:
        """The training pipeline of this datamodule."""
        return voc_train_transform(self.crop_size, self.train_max_size, self.mean, self.std)

    def eval_transform(self) -> SegmentationTransform:
        """The val/test pipeline of this datamodule."""
        return voc_eval_transform(self.eval_size, self.mean, self.std)

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:  # noqa: D102
        folder = self.dataset_dir()
        train_ids, val_ids, test_ids = self.split_ids()
        images, train_masks = folder / "JPEGImages", self.train_mask_dir()
        kw = {"num_classes": self.num_classes, "ignore_index": self.ignore_index}
        eval_tf = self.eval_transform()
        return (
            SegmentationFileDataset(
                train_ids, images, train_masks, self.train_transform(), train=True, **kw
            ),
            SegmentationFileDataset(val_ids, images, train_masks, eval_tf, **kw),
            SegmentationFileDataset(test_ids, images, folder / "SegmentationClass", eval_tf, **kw),
        )
