"""Calibration losses: cross-entropy, ACLS, and every regularizer ACLS is compared with.

Every class is a :class:`CalibrationLoss`: ``loss(logits, target)`` returns the scalar mean
over the valid rows (``target != ignore_index``), for ``(N, K)`` or ``(N, K, *spatial)``
logits, and ``loss.forward_with_parts(logits, target)`` returns the same total with its
unweighted, detached parts for logging (see :mod:`losses.base`).

================  ===========================  ===========================================
class             parts                        total
================  ===========================  ===========================================
CrossEntropy      ``{}``                       CE
LabelSmoothing    ``ce``, ``uniform``          ``(1 - alpha) * ce + alpha * uniform``
FocalLoss         ``{}``                       focal loss, ``gamma``
FLSD              ``{}``                       focal loss, per-row ``gamma``
EntropyPenalty    ``ce``, ``entropy``          ``ce - beta * entropy`` (entropy summed over K)
MMCE              ``ce``, ``mmce``             ``ce + weight * mmce`` (no square root)
MbLS              ``ce``, ``reg``              ``ce + alpha * reg``
CPC               ``ce``, ``bdc``, ``bec``     ``ce + lambda_bdc * bdc + lambda_bec * bec``
ACLS              ``ce``, ``reg``              ``ce + alpha * reg``
================  ===========================  ===========================================
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
