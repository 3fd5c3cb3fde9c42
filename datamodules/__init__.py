"""LightningDataModules. Each declares ``num_classes``, ``mean`` and ``std`` as class attributes."""

from datamodules.base import CalibrationDataModule
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from datamodules.digits import DigitsDataModule
from datamodules.imagenet import ImageNetDataModule
from datamodules.tiny_imagenet import TinyImageNetDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CalibrationDataModule",
    "DigitsDataModule",
    "ImageNetDataModule",
    "TinyImageNetDataModule",
]
