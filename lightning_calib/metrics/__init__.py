"""Exact, DDP-safe calibration metrics for classification and segmentation (torchmetrics).

Classes (``update(preds, target)`` with logits by default, ``(N, C)`` or ``(N, C, *spatial)``):

* :class:`ECE`, :class:`MCE`: equal-width bins, pooled over every valid row / pixel.
* :class:`AdaptiveECE`: equal-mass bins, ``mode="exact"`` or ``"streaming"`` (bounded error).
* :class:`ClasswiseECE`: class-wise (static) calibration error over ``num_classes`` classes.
* :class:`ImagewiseECE`: per-image pixel ECE averaged over images (CALS convention).
* :class:`BatchAveragedECE`: the batch-size dependent MbLS VOC convention (comparison only).
* :class:`NLL`, :class:`BrierScore`, :class:`TopKAccuracy`: exact sums.

The functional core (sufficient statistics, temperature grids) is
:mod:`lightning_calib.metrics.functional`.
"""

from lightning_calib.metrics import functional
from lightning_calib.metrics.calibration import (
    ECE,
    MCE,
    AdaptiveECE,
    BatchAveragedECE,
    ClasswiseECE,
    ImagewiseECE,
)
from lightning_calib.metrics.scores import NLL, BrierScore, TopKAccuracy

__all__ = [
    "ECE",
    "MCE",
    "NLL",
    "AdaptiveECE",
    "BatchAveragedECE",
    "BrierScore",
    "ClasswiseECE",
    "ImagewiseECE",
    "TopKAccuracy",
    "functional",
]
