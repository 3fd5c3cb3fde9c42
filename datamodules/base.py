"""The shared datamodule base: one constructor vocabulary, facts as class attributes.

Subclasses declare the dataset facts as class attributes -- ``num_classes``, ``mean``, ``std``,
``ignore_index`` (the void label of dense tasks; ``None`` when every target is a class) and
``class_names`` (for reports; ``None`` when only the files know them) -- so the CLI can link
them into the model right after the datamodule's ``__init__``, and implement
:meth:`build_datasets`. The model hands ``ignore_index`` on to the loss, the metrics and the
temperature search: it is typed once, here.
"""

from __future__ import annotations

from typing import ClassVar

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

__all__ = ["CalibrationDataModule"]


class CalibrationDataModule(pl.LightningDataModule):
    """Base class: train / val / test splits and their loaders.

    The validation split is the augmentation-free held-out part that model selection and
    temperature scaling use; the test split is never looked at during training.

    Args:
        root: dataset folder (``None`` for embedded data).
        batch_size: training batch size (per process under DDP).
        eval_batch_size: batch size of the val/test/predict loaders (default ``batch_size``).
        num_workers: loader worker processes.
        val_split: fraction (``< 1``) or count (``>= 1``) of the training data held out as the
            validation split, where the recipe carves it out of train.
        split_seed: seed of that split; the same seed gives the same split on every machine.
        pin_memory: pin host memory in the loaders.
    """

    num_classes: ClassVar[int]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    ignore_index: ClassVar[int | None] = None
    class_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_split: float = 0.1,
        split_seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"`eval_batch_size` must be >= 1 or None; got {eval_batch_size}.")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0; got {num_workers}.")
        if val_split < 0:
            raise ValueError(f"`val_split` must be >= 0; got {val_split}.")
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_split = val_split
        self.split_seed = split_seed
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return ``(train, val, test)`` datasets; subclasses implement it."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:  # noqa: D102
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self.build_datasets()

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before the loaders.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader(self.test_set, train=False)
