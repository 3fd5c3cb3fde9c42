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
        train_per_class: keep only this many training images of each class (a stratified,
            seeded subset of the training split, drawn with ``split_seed``; the val and test
            splits are unchanged); ``None`` (default) keeps the whole training split. Small
            values give the over-fitting regime of ``configs/digits_overfit``.
        occlusion: side (pixels of the upsampled image) of a square patch set to the
            background (0, before normalization) in every image, at a position drawn once per
            image; 0 (default) disables it.
        noise_std: standard deviation of Gaussian noise added once to every image (pixel
            values in ``[0, 1]``, clamped back to that range, before normalization); 0
            (default) disables it.

    The occlusion and the noise are part of the images, not augmentation: drawn once per image
    of ``load_digits`` from a generator seeded with ``split_seed``, before the split, so an
    image is corrupted the same way in every split, epoch, call and process, and train, val and
    test stay samples of one distribution. The normalization statistics are those of the clean
    images.
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
        train_per_class: int | None = None,
        occlusion: int = 0,
        noise_std: float = 0.0,
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
        if train_per_class is not None and (
            isinstance(train_per_class, bool)
            or not isinstance(train_per_class, (int, np.integer))
            or train_per_class < 1
        ):
            raise ValueError(
                "`train_per_class` must be None (the whole training split) or an int >= 1; "
                f"got {train_per_class!r}."
            )
        if (
            isinstance(occlusion, bool)
            or not isinstance(occlusion, (int, np.integer))
            or not 0 <= occlusion <= image_size
        ):
            raise ValueError(
                f"`occlusion` must be an int in [0, image_size={image_size}] (0 = off); "
                f"got {occlusion!r}."
            )
        if not (noise_std >= 0 and np.isfinite(noise_std)):
            raise ValueError(f"`noise_std` must be a finite float >= 0 (0 = off); got {noise_std}.")
        self.test_split = test_split
        self.image_size = image_size
        self.shift = shift
        self.train_per_class = train_per_class
        self.occlusion = occlusion
        self.noise_std = noise_std

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
        train = self._subsample(train, labels[train]) if self.train_per_class else train
        return np.sort(train), np.sort(val), np.sort(test)

    def _subsample(self, train: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``train_per_class`` indices of each class of ``train``, drawn with ``split_seed``."""
        n = self.train_per_class
        counts = np.bincount(labels, minlength=self.num_classes)
        if n > counts.min():
            raise ValueError(
                f"`train_per_class` must be <= {int(counts.min())} (the smallest class of the "
                f"training split, split_seed={self.split_seed}); got {n}."
            )
        rng = np.random.default_rng(self.split_seed)
        return np.concatenate(
            [rng.choice(train[labels == c], size=n, replace=False) for c in range(len(counts))]
        )

    def images(self) -> tuple[Tensor, Tensor]:
        """All images, normalized, ``(1797, 3, S, S)``, and their labels ``(1797,)``."""
        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        x = self._corrupt(x.clamp_(0.0, 1.0)).repeat(1, 3, 1, 1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std, torch.from_numpy(digits.target.astype(np.int64))

    def _corrupt(self, x: Tensor) -> Tensor:
        """``x`` ``(N, 1, S, S)`` in ``[0, 1]`` with the per-image occlusion and noise."""
        if not (self.occlusion or self.noise_std):
            return x
        rng = np.random.default_rng([self.split_seed, 0x0CC1])
        n, size = x.shape[0], x.shape[-1]
        if self.occlusion:
            corners = rng.integers(0, size - self.occlusion + 1, size=(n, 2))
            for img, (top, left) in zip(x, corners.tolist()):
                img[:, top : top + self.occlusion, left : left + self.occlusion] = 0.0
        if self.noise_std:
            noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(self.noise_std)
            x = (x + torch.from_numpy(noise)).clamp_(0.0, 1.0)
        return x

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:  # noqa: D102
        x, y = self.images()
        tr, va, te = (torch.from_numpy(i) for i in self.split_indices())
        return (
            TensorImageDataset(x[tr], y[tr], shift=self.shift),
            TensorImageDataset(x[va], y[va]),
            TensorImageDataset(x[te], y[te]),
        )
