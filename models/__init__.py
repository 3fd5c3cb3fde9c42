"""Networks. Each takes ``num_classes`` first, so the CLI can build it from the datamodule."""

from models.imagenet import TorchvisionResNet
from models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "TorchvisionResNet"]
