"""LightningDataModules. Each declares ``num_classes``, ``mean`` and ``std`` as class attributes."""

from datamodules.base import CalibrationDataModule
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from datamodules.digits import DigitsDataModule
from datamodules.digits_voc import DigitsVOCDataModule
from datamodules.imagenet import ImageNetDataModule
from datamodules.tiny_imagenet import TinyImageNetDataModule
from datamodules.voc import VOCSegmentationDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CalibrationDataModule",
    "DigitsDataModule",
    "DigitsVOCDataModule",
    "ImageNetDataModule",
    "TinyImageNetDataModule",
    "VOCSegmentationDataModule",
]
