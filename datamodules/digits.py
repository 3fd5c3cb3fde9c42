"""The embedded default: scikit-learn's bundled handwritten digits, shaped like CIFAR.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 grey images of the digits 0-9 inside the
package, so this datamodule needs no download and no data folder. Images are scaled to
``[0, 1]``, upsampled (bilinear) to ``image_size`` (16 by default) and repeated to 3 channels
so the CIFAR networks serve unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import CalibrationDataModule

__all__ = ["DigitsDataModule", "TensorImageDataset"]


class TensorImageDataset(Dataset):
    """Images held in one tensor, with optional random-shift augmentation (train only).

    Args:
        images: ``(N, C, H, W)`` float tensor, already normalized.
        labels: ``(N,)`` int64 tensor.
        shift: maximum random translation in pixels (zero padding), 0 = no augmentation.

    The shifts are drawn from torch's global generator (each loader worker has its own,
    seeded by the loader), so seeding the run and restoring the generators on resume (the
    ``RNGState`` callback) reproduces them.
    """

    def __init__(self, images: Tensor, labels: Tensor, shift: int = 0) -> None:
        self.images, self.labels, self.shift = images, labels, shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img = self.images[i]
        if self.shift:
            s = self.shift
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            h, w = img.shape[-2:]
            img = F.pad(img, (s, s, s, s))[:, dy : dy + h, dx : dx + w]
        return img, self.labels[i]


class DigitsDataModule(CalibrationDataModule):
    """Stratified, seeded train / val / test split of ``load_digits`` (10 classes).

    Args:
        batch_size: training batch size.
        eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader workers (0 is fastest for this in-memory data).
        val_split: fraction of all images in the validation split.
        test_split: fraction of all images in the test split.
        split_seed: seed of the stratified split.
        image_size: side of the upsampled square image (16 keeps a CPU epoch under half a
            second; the CIFAR networks take any size divisible by 4).
        shift: random translation (pixels) applied to training images; 0 disables it.
    """

    num_classes: ClassVar[int] = 10
    class_names: ClassVar[tuple[str, ...] | None] = tuple(str(d) for d in range(10))
    # Per-channel statistics of the images upsampled to 16x16, in [0, 1] (all 1,797 images;
    # at 32x32 the std is 0.3236).
    mean: ClassVar[tuple[float, ...]] = (0.3053, 0.3053, 0.3053)
    std: ClassVar[tuple[float, ...]] = (0.3189, 0.3189, 0.3189)

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = 256,
        num_workers: int = 0,
        val_split: float = 0.2,
        test_split: float = 0.3,
        split_seed: int = 0,
        image_size: int = 16,
        shift: int = 2,
    ) -> None:
        super().__init__(
            root=None,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split=val_split,
            split_seed=split_seed,
        )
        if not (0 < val_split < 1 and 0 < test_split < 1 and val_split + test_split < 1):
            raise ValueError(
                "`val_split` and `test_split` must be fractions in (0, 1) summing to < 1; got "
                f"val_split={val_split}, test_split={test_split}."
            )
        if image_size < 8:
            raise ValueError(f"`image_size` must be >= 8; got {image_size}.")
        self.test_split = test_split
        self.image_size = image_size
        self.shift = shift

    def split_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stratified ``(train, val, test)`` index arrays into ``load_digits()``; seeded."""
        labels = load_digits().target
        idx = np.arange(len(labels))
        rest, test = train_test_split(
            idx, test_size=self.test_split, stratify=labels, random_state=self.split_seed
        )
        val_frac = self.val_split / (1.0 - self.test_split)
        train, val = train_test_split(
            rest, test_size=val_frac, stratify=labels[rest], random_state=self.split_seed
        )
        return np.sort(train), np.sort(val), np.sort(test)

    def images(self) -> tuple[Tensor, Tensor]:
        """All images, normalized, ``(1797, 3, S, S)``, and their labels ``(1797,)``."""
        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = x.clamp_(0.0, 1.0).repeat(1, 3, 1, 1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std, torch.from_numpy(digits.target.astype(np.int64))

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:  # noqa: D102
        x, y = self.images()
        tr, va, te = (torch.from_numpy(i) for i in self.split_indices())
        return (
            TensorImageDataset(x[tr], y[tr], shift=self.shift),
            TensorImageDataset(x[va], y[va]),
            TensorImageDataset(x[te], y[te]),
        )
