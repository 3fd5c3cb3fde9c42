"""Tiny-ImageNet (200 classes, 64x64) from the official ``tiny-imagenet-200`` tree.

``root`` is the ``tiny-imagenet-200`` folder or its parent. Layout read::

    tiny-imagenet-200/
      wnids.txt                          200 WordNet ids, one a line
      train/<wnid>/images/*.JPEG         500 per class
      val/images/*.JPEG                  10,000 images
      val/val_annotations.txt            <file> <wnid> <x0> <y0> <x1> <y1> (tab-separated)

(``test/`` has no labels and is not used.)

Labels: class ``i`` is the ``i``-th wnid of ``sorted(wnids.txt)``. ``wnids.txt`` itself is
not sorted; ``torchvision.datasets.ImageFolder`` on ``train/`` (what most Tiny-ImageNet code
uses) sorts the folder names, and ImageNet's class indices are the sorted wnids too, so the
sorted order is the one that matches other code's checkpoints.

Splits (recipe): validation = ``val_split`` (default 0.1, i.e. 50 of each class's 500) of
the official train images, stratified and seeded (:func:`datamodules.splits.stratified_split`
over the sorted file list: 90k / 10k); test = the official ``val`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torch.utils.data import Dataset

from datamodules.base import CalibrationDataModule
from datamodules.splits import stratified_split
from datamodules.transforms import (
    ImageFileDataset,
    eval_transform,
    list_images,
    resolve_dataset_dir,
    tiny_imagenet_train_transform,
)

__all__ = ["TinyImageNetDataModule"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyImageNetDataModule(CalibrationDataModule):
    """Tiny-ImageNet: 90k train / 10k val (50 per class, seeded) / 10k official val as test.

    Train augmentation: RandomCrop(64, pad 4) + horizontal flip; ImageNet mean/std.

    Args:
        root: the ``tiny-imagenet-200`` folder or its parent.
        batch_size: training batch size (per process).
        eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader workers.
        val_split: fraction (``< 1``; 0.1 = 50 per class) or total count of the training
            images held out as validation, stratified over classes.
        split_seed: seed of the validation split.
        pin_memory: pin host memory in the loaders.
    """

    num_classes: ClassVar[int] = 200
    mean: ClassVar[tuple[float, ...]] = _IMAGENET_MEAN
    std: ClassVar[tuple[float, ...]] = _IMAGENET_STD
    folder_name: ClassVar[str] = "tiny-imagenet-200"
    source: ClassVar[str] = "http://cs231n.stanford.edu/tiny-imagenet-200.zip (unzip it)"
    layout: ClassVar[str] = (
        "  tiny-imagenet-200/wnids.txt\n"
        "  tiny-imagenet-200/train/<wnid>/images/*.JPEG\n"
        "  tiny-imagenet-200/val/images/*.JPEG\n"
        "  tiny-imagenet-200/val/val_annotations.txt"
    )

    def __init__(
        self,
        root: str = "data/tiny-imagenet-200",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        val_split: float = 0.1,
        split_seed: int = 0,
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
        self.class_names: list[str] | None = None

    def dataset_dir(self) -> Path:
        """The dataset folder; raises ``DatasetNotFoundError`` when the layout is wrong."""
        return resolve_dataset_dir(
            self.root,
            self.folder_name,
            ("wnids.txt", "train", "val/images", "val/val_annotations.txt"),
            dataset="Tiny-ImageNet",
            layout=self.layout,
            source=self.source,
        )

    def prepare_data(self) -> None:
        """Check the folder layout (nothing is downloaded)."""
        self.dataset_dir()

    def wnids(self) -> list[str]:
        """The class ids in label order (sorted ``wnids.txt``)."""
        path = self.dataset_dir() / "wnids.txt"
        wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
        if not wnids:
            raise ValueError(f"{path} lists no class ids (one WordNet id a line expected).")
        return wnids

    def train_samples(self, wnids: list[str]) -> list[tuple[str, int]]:
        """``(path, label)`` of every official training image, sorted by class then name."""
        train = self.dataset_dir() / "train"
        samples = []
        for label, wnid in enumerate(wnids):
            folder = train / wnid / "images"
            if not folder.is_dir():
                raise ValueError(
                    f"Tiny-ImageNet: {folder} is missing ('{wnid}' is listed in wnids.txt); "
                    f"expected layout:\n{self.layout}"
                )
            samples += [(str(folder / n), label) for n in list_images(folder)]
        if not samples:
            raise ValueError(f"Tiny-ImageNet: no images under {train}/<wnid>/images/.")
        return samples

    def test_samples(self, wnids: list[str]) -> list[tuple[str, int]]:
        """``(path, label)`` of the official val images (our test split), sorted by name."""
        val = self.dataset_dir() / "val"
        index = {wnid: i for i, wnid in enumerate(wnids)}
        present = set(list_images(val / "images"))
        ann = val / "val_annotations.txt"
        samples = []
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index or fields[0] not in present:
                raise ValueError(
                    f"{ann}, line {lineno}: expected '<file in val/images>\\t<wnid of "
                    f"wnids.txt>\\t...'; got {line!r}."
                )
            samples.append((str(val / "images" / fields[0]), index[fields[1]]))
        if not samples:
            raise ValueError(f"{ann} lists no images.")
        return sorted(samples)

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:  # noqa: D102
        wnids = self.wnids()
        self.class_names = wnids
        samples = self.train_samples(wnids)
        train_idx, val_idx = stratified_split(
            [label for _, label in samples], self.val_split, self.split_seed
        )
        train_tf = tiny_imagenet_train_transform(self.mean, self.std)
        eval_tf = eval_transform(self.mean, self.std)
        return (
            ImageFileDataset([samples[i] for i in train_idx], train_tf),
            ImageFileDataset([samples[i] for i in val_idx], eval_tf),
            ImageFileDataset(self.test_samples(wnids), eval_tf),
        )
