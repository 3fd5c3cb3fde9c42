"""Calibration losses: cross-entropy, ACLS, and every regularizer ACLS is compared with.

Every class is a :class:`CalibrationLoss`: ``loss(logits, target)`` returns the scalar mean
over the valid rows, and ``loss.forward_with_parts(logits, target)`` returns it together with
its unweighted named parts for logging (see :mod:`losses.base`).
"""

from losses.base import CalibrationLoss
from losses.cpc import CPC
from losses.cross_entropy import CrossEntropy, LabelSmoothing
from losses.entropy import EntropyPenalty
from losses.focal import FLSD, FocalLoss
from losses.margin import ACLS, MbLS
from losses.mmce import MMCE

__all__ = [
    "ACLS",
    "CPC",
    "FLSD",
    "MMCE",
    "CalibrationLoss",
    "CrossEntropy",
    "EntropyPenalty",
    "FocalLoss",
    "LabelSmoothing",
    "MbLS",
]
