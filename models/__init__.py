"""Networks. Each takes ``num_classes`` first, so the CLI can build it from the datamodule."""

from models.imagenet import TorchvisionResNet
from models.resnet import BasicBlock, Bottleneck, ResNet
from models.segmentation import DeepLabV3, DeepLabV3Plus, SmallSegNet, TimmSyncBatchNorm

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DeepLabV3",
    "DeepLabV3Plus",
    "ResNet",
    "SmallSegNet",
    "TimmSyncBatchNorm",
    "TorchvisionResNet",
]
