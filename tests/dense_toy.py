"""A small dense task that proves the module's seam: per-pixel classes with void pixels.

Each pixel's class is readable from its colour (a 1x1 convolution can learn it), a band of
pixels is void (``ignore_index`` 255), and the data is random but seeded. Importable as
``dense_toy.ToyDenseDataModule`` / ``dense_toy.PixelNet`` by the CLI inside the test suite
(``tests/`` is on ``sys.path`` there).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from datamodules.base import CalibrationDataModule

VOID = 255


def toy_dense_data(n: int, classes: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(n, 3, size, size)`` images whose pixels encode their class, ``(n, size, size)`` masks.

    The class of a pixel is drawn uniformly; its colour is the class's prototype plus noise
    (the same prototypes in every split: learnable, not trivially separable); a one-pixel
    border is void.
    """
    prototypes = torch.randn(classes, 3, generator=torch.Generator().manual_seed(1234)) * 2.0
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, classes, (n, size, size), generator=g)
    x = prototypes[mask].permute(0, 3, 1, 2) + torch.randn(n, 3, size, size, generator=g)
    mask[:, 0, :] = VOID
    mask[:, :, -1] = VOID
    return x, mask


class ToyDenseDataModule(CalibrationDataModule):
    """Per-pixel classification, 4 classes, void label 255: the dataset facts as attributes."""

    num_classes: ClassVar[int] = 4
    ignore_index: ClassVar[int | None] = VOID
    class_names: ClassVar[tuple[str, ...] | None] = ("background", "red", "green", "blue")
    mean: ClassVar[tuple[float, ...]] = (0.0, 0.0, 0.0)
    std: ClassVar[tuple[float, ...]] = (1.0, 1.0, 1.0)

    def __init__(
        self, batch_size: int = 4, eval_batch_size: int | None = None, size: int = 8
    ) -> None:
        super().__init__(root=None, batch_size=batch_size, eval_batch_size=eval_batch_size)
        self.size = size

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        k, s = self.num_classes, self.size
        return (
            TensorDataset(*toy_dense_data(24, k, s, seed=0)),
            TensorDataset(*toy_dense_data(12, k, s, seed=1)),
            TensorDataset(*toy_dense_data(12, k, s, seed=2)),
        )


class PixelNet(nn.Module):
    """A 1x1 convolution: logits ``(N, num_classes, H, W)`` at the input size."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.head = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)
