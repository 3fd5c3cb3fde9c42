"""Margin-based losses on logit distances: MbLS and ACLS (fused, analytic gradients)."""

from __future__ import annotations

from torch import Tensor

from losses import _native
from losses._fused import ACLSFunction, MbLSFunction
from losses.base import Batch, CalibrationLoss, check_number

__all__ = ["ACLS", "MbLS"]


class MbLS(CalibrationLoss):
    r"""Margin-based label smoothing (MbLS): cross-entropy plus a linear hinge on logit distances.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -\log p_{i,y_i}
        \;+\; \alpha\,\frac{1}{NK}\sum_{i=1}^{N}\sum_{k=1}^{K}
        \bigl[\,z_{i,\max} - z_{ik} - M\,\bigr]_+

    where :math:`z_{ik}` are the logits of the :math:`N` valid rows (rows with
    ``target == ignore_index`` dropped) and :math:`K` classes, :math:`p_i=\mathrm{softmax}(z_i)`,
    :math:`y_i` the target, :math:`z_{i,\max}=\max_k z_{ik}` (**not** detached: its gradient
    pushes the top logit down), :math:`M` the margin, :math:`\alpha` the weight and
    :math:`[x]_+=\max(x,0)`. The hinge is linear, so every violating entry gets the same
    constant push, :math:`\alpha/(NK)`, whatever the size of the violation. At a tie for the
    max, the max's gradient is split evenly among the tied entries (the subgradient of
    :func:`torch.amax`).

    Forward and backward are one fused node (:class:`losses._fused.MbLSFunction`) working on
    the logits' own layout, ignored pixels dropped without copying the valid ones out; on CPU
    a single call of a C kernel (:mod:`losses._native`, built on first use; the PyTorch code
    is the fallback).

    Parts (unweighted): ``"ce"`` the cross-entropy and ``"reg"`` the mean hinge, so that
    ``total = ce + alpha * reg``.

    Args:
        margin: :math:`M \ge 0`; default 10.
        alpha: :math:`\alpha \ge 0`; default 0.1. Both defaults are the configuration the ACLS
            paper compares against (docs/REFERENCE.md).
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> loss = MbLS(margin=10.0, alpha=0.1)
        >>> logits = torch.tensor([[12.0, 0.0, 1.0]])  # distances 12 and 11: hinges 2 and 1
        >>> total, parts = loss.forward_with_parts(logits, torch.tensor([0]))
        >>> round(parts["reg"].item(), 6), round(total.item(), 6)  # reg = (2 + 1) / 3
        (1.0, 0.100023)

    References:
        Liu, Ben Ayed, Galdran, Dolz. *The Devil is in the Margin: Margin-based Label
        Smoothing for Network Calibration.* CVPR 2022.
    """

    part_names = ("ce", "reg")

    def __init__(
        self,
        margin: float = 10.0,
        alpha: float = 0.1,
        ignore_index: int = -100,
        validate: bool = True,
    ) -> None:
        super().__init__(ignore_index, validate)
        self.margin = check_number("margin", margin, low=0.0)
        self.alpha = check_number("alpha", alpha, low=0.0)

    def _checks_target_values(self, logits: Tensor) -> bool:
        return _native.serves(logits)

    def _compute(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        total, ce, reg = MbLSFunction.apply(batch.logits, batch, self.margin, self.alpha)
        return total, {"ce": ce, "reg": reg}


class ACLS(CalibrationLoss):
    r"""Adaptive and conditional label smoothing (ACLS).

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -\log p_{i,y_i} \;+\; \alpha R,\qquad
        R = \frac{\lambda_{pos}}{N}\sum_{i=1}^{N}\bigl[z_{i,\max} - M\bigr]_+^2
        + \frac{\lambda_{neg}}{N(K-1)}\sum_{i=1}^{N}\sum_{k\ne m_i}
        \bigl[\,\mathrm{sg}(z_{i,\max}) - z_{ik} - M\,\bigr]_+^2

    over the :math:`N` valid rows (``target == ignore_index`` dropped) and :math:`K` classes;
    :math:`z_{ik}` the logits, :math:`p_i=\mathrm{softmax}(z_i)`, :math:`y_i` the target,
    :math:`z_{i,\max}=\max_k z_{ik}` reached at :math:`m_i` (the **predicted** class: the
    regularizer never reads the label), :math:`\mathrm{sg}` stop-gradient, :math:`M` the margin
    and :math:`[x]_+=\max(x,0)`. At a tie every entry equal to the max is a positive: the
    positive term counts once per tied entry and each one gets its gradient.

    The gradient per row (times :math:`1/N`) is :math:`p_k-\hat y_k` with the implicit soft
    targets :math:`\hat y_{m}=y_m-2\alpha\lambda_{pos}[z_{\max}-M]_+` at the winner(s) and
    :math:`\hat y_k=y_k+\frac{2\alpha\lambda_{neg}}{K-1}[z_{\max}-z_k-M]_+` elsewhere: the
    smoothing grows with the violation (adaptive) and treats the winner apart (conditional).
    Forward and backward are one fused node (:class:`losses._fused.ACLSFunction`) computing this
    gradient directly, on the logits' own layout, ignored pixels dropped (**fix**: the public
    code stores ``ignore_index`` but never uses it); on CPU a single call of a C kernel
    (:mod:`losses._native`, built on first use; the PyTorch code is the fallback).

    Parts (unweighted): ``"ce"`` the cross-entropy and ``"reg"`` :math:`R` (with its
    :math:`\lambda` s, without :math:`\alpha`), so that ``total = ce + alpha * reg``.

    Args:
        alpha: :math:`\alpha \ge 0`, the regularizer's weight; default 0.1.
        pos_lambda: :math:`\lambda_{pos} \ge 0`; default 1.
        neg_lambda: :math:`\lambda_{neg} \ge 0`; default 0.1.
        margin: :math:`M \ge 0`; default 10.
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    The defaults are the paper's configuration, as in its public code (docs/REFERENCE.md).

    Example:
        >>> import torch
        >>> loss = ACLS()
        >>> logits = torch.tensor([[12.0, 0.0, 1.0]])
        >>> # pos: (12 - 10)^2 = 4; neg: ((12 - 0 - 10)^2 + (12 - 1 - 10)^2) / 2 = 2.5
        >>> total, parts = loss.forward_with_parts(logits, torch.tensor([0]))
        >>> round(parts["reg"].item(), 6)  # 1 * 4 + 0.1 * 2.5
        4.25
        >>> round(total.item(), 6)  # ce = 2.3e-5, plus 0.1 * 4.25
        0.425023

    References:
        Park, Noh, Oh, Baek, Ham. *ACLS: Adaptive and Conditional Label Smoothing for Network
        Calibration.* ICCV 2023. arXiv:2308.11911.
    """

    part_names = ("ce", "reg")

    def __init__(
        self,
        alpha: float = 0.1,
        pos_lambda: float = 1.0,
        neg_lambda: float = 0.1,
        margin: float = 10.0,
        ignore_index: int = -100,
        validate: bool = True,
    ) -> None:
        super().__init__(ignore_index, validate)
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.pos_lambda = check_number("pos_lambda", pos_lambda, low=0.0)
        self.neg_lambda = check_number("neg_lambda", neg_lambda, low=0.0)
        self.margin = check_number("margin", margin, low=0.0)

    def _checks_target_values(self, logits: Tensor) -> bool:
        return _native.serves(logits)

    def _compute(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        total, ce, reg = ACLSFunction.apply(
            batch.logits,
            batch,
            self.margin,
            self.alpha,
            self.pos_lambda,
            self.neg_lambda,
        )
        return total, {"ce": ce, "reg": reg}
