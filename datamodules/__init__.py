"""LightningDataModules. Each declares ``num_classes``, ``mean`` and ``std`` as class attributes."""

from datamodules.base import CalibrationDataModule
from datamodules.digits import DigitsDataModule

__all__ = ["CalibrationDataModule", "DigitsDataModule"]
