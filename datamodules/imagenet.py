"""ImageNet (ILSVRC2012, 1000 classes) from the standard class-folder layout.

``root`` is the dataset folder holding ``train/`` and ``val/``, or its parent with the
dataset in ``imagenet/``. Layout read::

    train/<wnid>/*.JPEG     1,281,167 images
    val/<wnid>/*.JPEG       50,000 images, sorted into class folders (the usual
                            ``valprep.sh`` step; the flat val folder of the archive is refused)

Labels: class ``i`` is the ``i``-th of the sorted ``train/`` folder names, the order of
``torchvision.datasets.ImageNet`` / ``ImageFolder`` (and of the ILSVRC2012 devkit ids).

Splits (recipe): train = all of ``train/``; the official val images are split by name into
validation (the 10k listed in the committed ``datamodules/splits/imagenet_val_split.txt``)
and test (the other 40k). The list is fixed, so the split is the same on every machine
whatever its file system returns. Train: RandomResizedCrop(224) + flip; eval: Resize(256)
+ CenterCrop(224); ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torch.utils.data import Dataset

from datamodules.base import CalibrationDataModule
from datamodules.splits import IMAGENET_SPLIT_FILE, read_name_list
from datamodules.transforms import (
    ImageFileDataset,
    imagenet_eval_transform,
    imagenet_train_transform,
    list_images,
    resolve_dataset_dir,
)

__all__ = ["ImageNetDataModule"]


class ImageNetDataModule(CalibrationDataModule):
    """ImageNet: official train / 10k val + 40k test carved from the official val (fixed list).

    Args:
        root: the folder holding ``train/`` and ``val/`` (or its parent, with ``imagenet/``).
        batch_size: training batch size (per process: the recipe's 512 is 8 GPUs x 64).
        eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader workers.
        pin_memory: pin host memory in the loaders.
        val_split_file: file listing the official-val image names of the validation split
            (default: the committed ``imagenet_val_split.txt``).
        crop_size: training crop and evaluation center crop (224).
        resize_size: evaluation resize of the shorter side (256).
    """

    num_classes: ClassVar[int] = 1000
    mean: ClassVar[tuple[float, ...]] = (0.485, 0.456, 0.406)
    std: ClassVar[tuple[float, ...]] = (0.229, 0.224, 0.225)
    folder_name: ClassVar[str] = "imagenet"
    source: ClassVar[str] = (
        "https://image-net.org/download (ILSVRC2012 train and val archives; move the val "
        "images into val/<wnid>/ folders, e.g. with the widely used valprep.sh)"
    )
    layout: ClassVar[str] = "  imagenet/train/<wnid>/*.JPEG\n  imagenet/val/<wnid>/*.JPEG"

    def __init__(
        self,
        root: str = "data/imagenet",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool = False,
        val_split_file: str | None = None,
        crop_size: int = 224,
        resize_size: int = 256,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split=0,
            split_seed=0,
            pin_memory=pin_memory,
        )
        if not 0 < crop_size <= resize_size:
            raise ValueError(
                f"need 0 < crop_size <= resize_size; got crop_size={crop_size}, "
                f"resize_size={resize_size}."
            )
        self.val_split_file = Path(val_split_file) if val_split_file else IMAGENET_SPLIT_FILE
        self.crop_size = crop_size
        self.resize_size = resize_size
        self.class_names: list[str] | None = None

    def dataset_dir(self) -> Path:
        """The dataset folder; raises ``DatasetNotFoundError`` when the layout is wrong."""
        return resolve_dataset_dir(
            self.root,
            self.folder_name,
            ("train", "val"),
            dataset="ImageNet",
            layout=self.layout,
            source=self.source,
        )

    def prepare_data(self) -> None:
        """Check the folder layout and the split file (nothing is downloaded)."""
        self.dataset_dir()
        read_name_list(self.val_split_file)

    def wnids(self) -> list[str]:
        """Class folder names of ``train/``, sorted (the label order)."""
        train = self.dataset_dir() / "train"
        wnids = sorted(p.name for p in train.iterdir() if p.is_dir())
        if not wnids:
            raise ValueError(f"ImageNet: {train} has no class folders; expected\n{self.layout}")
        return wnids

    def folder_samples(self, folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
        """``(path, label)`` of ``folder/<wnid>/*``, sorted by class then file name."""
        index = {w: i for i, w in enumerate(wnids)}
        subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        unknown = [d for d in subdirs if d not in index]
        if unknown:
            raise ValueError(
                f"ImageNet: {folder} has class folders missing from train/: {unknown[:5]}."
            )
        if not subdirs and list_images(folder):
            raise ValueError(
                f"ImageNet: {folder} holds images directly; sort them into <wnid>/ class "
                f"folders first (expected\n{self.layout}\n; see {self.source})."
            )
        samples = [
            (str(folder / d / name), index[d]) for d in subdirs for name in list_images(folder / d)
        ]
        if not samples:
            raise ValueError(f"ImageNet: no images under {folder}/<wnid>/.")
        return samples

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:  # noqa: D102
        root = self.dataset_dir()
        wnids = self.wnids()
        self.class_names = wnids
        train = self.folder_samples(root / "train", wnids)
        official_val = self.folder_samples(root / "val", wnids)
        listed = set(read_name_list(self.val_split_file))
        val = [s for s in official_val if Path(s[0]).name in listed]
        test = [s for s in official_val if Path(s[0]).name not in listed]
        if not val or not test:
            raise ValueError(
                f"ImageNet: splitting the {len(official_val)} images of {root / 'val'} with "
                f"{self.val_split_file} left {len(val)} for validation and {len(test)} for "
                "test; the split file must list some, but not all, of the official val file "
                "names (ILSVRC2012_val_00000001.JPEG ...)."
            )
        eval_tf = imagenet_eval_transform(self.mean, self.std, self.resize_size, self.crop_size)
        return (
            ImageFileDataset(train, imagenet_train_transform(self.mean, self.std, self.crop_size)),
            ImageFileDataset(val, eval_tf),
            ImageFileDataset(test, eval_tf),
        )
