"""ResNets for calibration experiments, one class for every variant the recipes use.

* CIFAR / embedded data: 3x3 stride-1 stem, no max-pool, global average pool
  (``stem="cifar", pool_size=1``).
* Tiny-ImageNet: the same stem, adaptive average pool to 2x2 so the classifier sees
  ``4 * feature_dim`` inputs (``stem="cifar", pool_size=2``).
* ImageNet: 7x7 stride-2 stem with max-pool (``stem="imagenet"``).

Weights are always initialised locally (Kaiming); nothing is downloaded.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with an identity (or projection) shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
    )


# depth -> (block, blocks per stage). Depth 8 is a one-block-per-stage toy for tests and demos.
_LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    8: (BasicBlock, (1, 1, 1)),
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """A ResNet classifier configurable for CIFAR, Tiny-ImageNet, ImageNet and toy data.

    Args:
        num_classes: output logits per image (given by the datamodule through the CLI).
        depth: one of 8, 10, 18, 34, 50, 101, 152.
        width: channels of the first stage; stage ``s`` has ``width * 2**s`` (times the block
            expansion).
        stem: ``"cifar"`` (3x3 stride 1, no max-pool) or ``"imagenet"`` (7x7 stride 2 +
            max-pool).
        pool_size: side of the adaptive average pool before the classifier (1 = global pool;
            the Tiny-ImageNet recipe uses 2).
        in_channels: input image channels.

    Example:
        >>> import torch
        >>> net = ResNet(num_classes=10, depth=8, width=8)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int,
        depth: int = 18,
        width: int = 64,
        stem: str = "cifar",
        pool_size: int = 1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth not in _LAYOUTS:
            raise ValueError(f"`depth` must be one of {sorted(_LAYOUTS)}; got {depth}.")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"`stem` must be 'cifar' or 'imagenet'; got {stem!r}.")
        if num_classes < 1 or width < 1 or pool_size < 1:
            raise ValueError(
                "`num_classes`, `width` and `pool_size` must be positive; got "
                f"{num_classes}, {width}, {pool_size}."
            )
        block, layers = _LAYOUTS[depth]
        self.num_classes = num_classes
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        stages = []
        in_planes = width
        for i, n_blocks in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.feature_dim = in_planes * pool_size * pool_size
        self.fc = nn.Linear(self.feature_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled, flattened features ``(N, feature_dim)``."""
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)``."""
        return self.fc(self.forward_features(x))
