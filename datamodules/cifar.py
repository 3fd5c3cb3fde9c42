"""CIFAR-10 and CIFAR-100 from the official python-pickle batches.

``root`` is the extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``) or its
parent. The batches are read here with a restricted unpickler (numpy arrays and builtins
only) rather than through ``torchvision.datasets.CIFAR10``, which insists on the MD5 sums of
the official archive files (so small test files in the same format would fail).

Splits (recipe): ``val_split`` (default 0.1) of the official training set is held out,
stratified and seeded (:func:`datamodules.splits.stratified_split`: 45k train / 5k val, 500
per class, on CIFAR-10), as the augmentation-free validation split; the official test batch
is the test split. Labels are the official ones (``batches.meta`` / ``meta`` give the names).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import CalibrationDataModule
from datamodules.splits import stratified_split
from datamodules.transforms import cifar_train_transform, eval_transform, resolve_dataset_dir

__all__ = ["ArrayImageDataset", "CIFAR10DataModule", "CIFAR100DataModule", "read_cifar_batch"]

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only (the CIFAR batches need nothing else)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def read_cifar_batch(path: str | Path) -> dict[str, Any]:
    """Load one CIFAR pickle file as a dict with ``str`` keys.

    Raises:
        ValueError: the file is not a readable CIFAR pickle (the message names it).
    """
    try:
        with open(path, "rb") as f:
            data = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as err:  # pickle raises many kinds on garbage input
        raise ValueError(f"cannot read CIFAR batch file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"CIFAR batch file {path} holds a {type(data).__name__}, not a dict.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


class ArrayImageDataset(Dataset):
    """Images held in one ``uint8`` array ``(N, H, W, C)`` with integer labels.

    Args:
        images: ``(N, H, W, C)`` uint8 array (shared, not copied).
        labels: ``(N,)`` integer array.
        transform: applied to each ``(C, H, W)`` uint8 tensor; returns a float tensor.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.images[i]), self.labels[i]

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in order."""
        return self.labels.tolist()


class CIFAR10DataModule(CalibrationDataModule):
    """CIFAR-10: 45k train / 5k val (stratified, seeded) / 10k official test, 32x32 RGB.

    Train augmentation: RandomCrop(32, pad 4) + horizontal flip; all splits are normalized
    with the class attributes ``mean`` / ``std``.

    Args:
        root: the ``cifar-10-batches-py`` folder or its parent.
        batch_size: training batch size (per process).
        eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader workers.
        val_split: fraction (``< 1``) or count of the training set held out as validation.
        split_seed: seed of the validation split.
        pin_memory: pin host memory in the loaders.
    """

    num_classes: ClassVar[int] = 10
    class_names: ClassVar[tuple[str, ...] | None] = (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    mean: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, ...]] = (0.2023, 0.1994, 0.2010)
    folder_name: ClassVar[str] = "cifar-10-batches-py"
    train_files: ClassVar[tuple[str, ...]] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files: ClassVar[tuple[str, ...]] = ("test_batch",)
    meta_file: ClassVar[str] = "batches.meta"
    label_key: ClassVar[str] = "labels"
    names_key: ClassVar[str] = "label_names"
    source: ClassVar[str] = (
        "https://www.cs.toronto.edu/~kriz/cifar.html (the python version, "
        "cifar-10-python.tar.gz; extract it with `tar xzf`)"
    )

    def __init__(
        self,
        root: str = "data/cifar-10-batches-py",
        batch_size: int = 128,
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

    @classmethod
    def layout(cls) -> str:
        """The expected folder layout, as shown in error messages."""
        files = ", ".join((*cls.train_files, *cls.test_files, cls.meta_file))
        return f"  {cls.folder_name}/  {files}  (python pickles)"

    def dataset_dir(self) -> Path:
        """The dataset folder; raises ``DatasetNotFoundError`` when the layout is wrong."""
        return resolve_dataset_dir(
            self.root,
            self.folder_name,
            (*self.train_files, *self.test_files, self.meta_file),
            dataset=type(self).__name__.removesuffix("DataModule"),
            layout=self.layout(),
            source=self.source,
        )

    def prepare_data(self) -> None:
        """Check the folder layout (nothing is downloaded)."""
        self.dataset_dir()

    def read_split(self, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` of the given batch files."""
        folder = self.dataset_dir()
        images, labels = [], []
        for name in files:
            path = folder / name
            batch = read_cifar_batch(path)
            try:
                data = np.asarray(batch["data"], dtype=np.uint8)
                target = np.asarray(batch[self.label_key], dtype=np.int64)
            except KeyError as err:
                raise ValueError(f"CIFAR batch file {path} has no key {err}.") from err
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(target) != len(data):
                raise ValueError(
                    f"CIFAR batch file {path}: expected `data` of shape (N, 3072) and N labels; "
                    f"got data {data.shape} and {len(target)} labels."
                )
            if len(target) and (target.min() < 0 or target.max() >= self.num_classes):
                raise ValueError(
                    f"CIFAR batch file {path}: labels must lie in [0, {self.num_classes}); got "
                    f"[{target.min()}, {target.max()}]."
                )
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(target)
        return np.concatenate(images), np.concatenate(labels)

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:  # noqa: D102
        meta = read_cifar_batch(self.dataset_dir() / self.meta_file)
        self.class_names = list(meta.get(self.names_key, [])) or None
        x, y = self.read_split(self.train_files)
        x_test, y_test = self.read_split(self.test_files)
        train_idx, val_idx = stratified_split(y, self.val_split, self.split_seed)
        train_tf = cifar_train_transform(self.mean, self.std)
        eval_tf = eval_transform(self.mean, self.std)
        return (
            ArrayImageDataset(x[train_idx], y[train_idx], train_tf),
            ArrayImageDataset(x[val_idx], y[val_idx], eval_tf),
            ArrayImageDataset(x_test, y_test, eval_tf),
        )


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels): 45k train / 5k val (stratified, seeded) / 10k official test.

    Same recipe and arguments as :class:`CIFAR10DataModule`; ``root`` is the
    ``cifar-100-python`` folder or its parent.
    """

    num_classes: ClassVar[int] = 100
    # The fine label names in label order (the order of `fine_label_names` in the `meta` file).
    class_names: ClassVar[tuple[str, ...] | None] = tuple(
        """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
        butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
        crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house
        kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
        mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
        plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
        skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
        telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf
        woman worm""".split()
    )
    mean: ClassVar[tuple[float, ...]] = (0.5071, 0.4865, 0.4409)
    std: ClassVar[tuple[float, ...]] = (0.2673, 0.2564, 0.2762)
    folder_name: ClassVar[str] = "cifar-100-python"
    train_files: ClassVar[tuple[str, ...]] = ("train",)
    test_files: ClassVar[tuple[str, ...]] = ("test",)
    meta_file: ClassVar[str] = "meta"
    label_key: ClassVar[str] = "fine_labels"
    names_key: ClassVar[str] = "fine_label_names"
    source: ClassVar[str] = (
        "https://www.cs.toronto.edu/~kriz/cifar.html (the python version, "
        "cifar-100-python.tar.gz; extract it with `tar xzf`)"
    )

    def __init__(
        self,
        root: str = "data/cifar-100-python",
        batch_size: int = 128,
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
