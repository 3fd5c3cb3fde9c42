"""Focal loss and its sample-dependent variant FLSD-53."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor

from losses.base import Batch, CalibrationLoss, check_number

__all__ = ["FLSD", "FocalLoss"]


class FocalLoss(CalibrationLoss):
    r"""Focal loss: cross-entropy down-weighted on confident rows.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -(1-p_{i,y_i})^{\gamma}\,\log p_{i,y_i}

    over the :math:`N` valid rows; :math:`p_i=\mathrm{softmax}(z_i)`, :math:`y_i` the target,
    :math:`\gamma\ge 0` the focusing parameter (:math:`\gamma=0` is cross-entropy). It
    rescales the cross-entropy gradient by
    :math:`w(p_y)=(1-p_y)^{\gamma-1}\bigl((1-p_y)-\gamma p_y\log p_y\bigr)`. :math:`1-p_y` is
    computed as ``-expm1(log p_y)`` (accurate near :math:`p_y=1`) and floored at the smallest
    normal float, so the gradient stays finite for any :math:`\gamma` even at
    :math:`p_y = 1`.

    Parts: none (``{}``).

    Args:
        gamma: :math:`\gamma \ge 0`; default 3, the value in the ACLS paper's
            comparison (docs/REFERENCE.md).
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.0, 0.0]])  # p_y = 1/2
        >>> round(FocalLoss(gamma=2.0)(logits, torch.tensor([0])).item(), 6)  # log(2) / 4
        0.173287

    References:
        Lin, Goyal, Girshick, He, Dollár. *Focal Loss for Dense Object Detection.* ICCV 2017.
        Mukhoti, Kulharia, Sanyal, Golodetz, Torr, Dokania. *Calibrating Deep Neural Networks
        using Focal Loss.* NeurIPS 2020.
    """

    def __init__(self, gamma: float = 3.0, ignore_index: int = -100, validate: bool = True):
        super().__init__(ignore_index, validate)
        self.gamma = check_number("gamma", gamma, low=0.0)

    def _exponent(self, ce_rows: Tensor) -> Tensor | float:
        """The focusing exponent: one float, or one per row (from ``p_y = exp(-ce)``)."""
        return self.gamma

    def _compute(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        ce_rows = F.cross_entropy(batch.logits, batch.target, reduction="none")  # -log p_y
        one_minus = torch.expm1(-ce_rows).neg().clamp_min(torch.finfo(ce_rows.dtype).tiny)
        exponent = self._exponent(ce_rows)
        return batch.mean(one_minus.pow(exponent) * ce_rows), {}


class FLSD(FocalLoss):
    r"""Sample-dependent focal loss FLSD-53: focal loss whose :math:`\gamma` depends on the row.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -(1-p_{i,y_i})^{\gamma_i}\,\log p_{i,y_i},
        \qquad \gamma_i = \begin{cases}
            5 & p_{i,y_i} < 0.2\\
            3 & 0.2 \le p_{i,y_i} < 0.5\\
            \gamma & \text{otherwise}
        \end{cases}

    over the :math:`N` valid rows; :math:`p_i=\mathrm{softmax}(z_i)`, :math:`y_i` the target.
    :math:`\gamma_i` is chosen from the detached :math:`p_{i,y_i}` by one vectorized
    :func:`torch.bucketize` (the public code loops over the samples in Python, one ``.item()``
    each). The thresholds and their exponents are ``schedule``; rows at or above the last
    threshold use ``gamma``.

    Parts: none (``{}``).

    Args:
        gamma: :math:`\gamma \ge 0` for the confident rows; default 3 (FLSD-53: 5 below 0.2,
            3 above).
        schedule: ``((threshold, gamma), ...)`` with increasing thresholds in ``(0, 1]`` and
            exponents ``>= 0``; default ``((0.2, 5.0), (0.5, 3.0))`` (Mukhoti et al. 2020).
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> logits = torch.log(torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.6, 0.4]]))
        >>> loss = FLSD()
        >>> FLSD(gamma=2.0).gammas(torch.tensor([0.1, 0.2, 0.3, 0.5, 0.6])).tolist()
        [5.0, 3.0, 3.0, 2.0, 2.0]
        >>> # (0.9^5 log 10 + 0.7^3 log(10/3) + 0.4^3 log(10/6)) / 3
        >>> round(loss(logits, torch.tensor([0, 0, 0])).item(), 6)
        0.60177

    References:
        Mukhoti, Kulharia, Sanyal, Golodetz, Torr, Dokania. *Calibrating Deep Neural Networks
        using Focal Loss.* NeurIPS 2020.
    """

    def __init__(
        self,
        gamma: float = 3.0,
        schedule: Sequence[tuple[float, float]] = ((0.2, 5.0), (0.5, 3.0)),
        ignore_index: int = -100,
        validate: bool = True,
    ) -> None:
        super().__init__(gamma, ignore_index, validate)
        pairs = [tuple(pair) for pair in schedule]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            raise ValueError(
                f"`schedule` must be a non-empty sequence of (threshold, gamma) pairs; "
                f"got {schedule!r}."
            )
        thresholds = [
            check_number("schedule threshold", t, low=0.0, high=1.0, low_open=True)
            for t, _ in pairs
        ]
        gammas = [check_number("schedule gamma", g, low=0.0) for _, g in pairs]
        if any(b <= a for a, b in pairwise(thresholds)):
            raise ValueError(f"`schedule` thresholds must increase; got {thresholds}.")
        self.schedule = tuple(zip(thresholds, gammas))
        self._tables: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def gammas(self, p_target: Tensor) -> Tensor:
        """The exponent of each row given its target probability ``p_target`` (any shape).

        One :func:`torch.bucketize` against the thresholds, held in ``p_target``'s dtype (so
        ``p == threshold`` falls in the upper bucket exactly, as the scalar comparison of the
        public code) and cached per dtype and device.
        """
        key = (p_target.dtype, p_target.device)
        if key not in self._tables:
            options = {"dtype": p_target.dtype, "device": p_target.device}
            thresholds = torch.tensor([t for t, _ in self.schedule], **options)
            values = torch.tensor([g for _, g in self.schedule] + [self.gamma], **options)
            self._tables[key] = (thresholds, values)
        thresholds, values = self._tables[key]
        return values.take(torch.bucketize(p_target, thresholds, right=True))

    def _exponent(self, ce_rows: Tensor) -> Tensor:
        return self.gammas(torch.exp(-ce_rows.detach()))
