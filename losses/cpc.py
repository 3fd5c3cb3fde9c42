"""Calibration by pairwise constraints (CPC)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from losses.base import Batch, check_number
from losses.cross_entropy import RegularizedCE

__all__ = ["CPC", "PairwiseExclusion"]

# Elements of one (rows, K, K) block of pairwise differences: bounds the memory of BEC.
_BLOCK_ELEMENTS = 1 << 21


class PairwiseExclusion(torch.autograd.Function):
    r"""``sum_i P_i`` with ``P_i = sum_{j != k; j, k != y_i} log sigmoid(z_ij - z_ik)``.

    The pairwise differences are built block by block of rows (at most ``2**21`` elements at a
    time) in the forward and again in the backward, whose analytic gradient is
    :math:`\partial P_i/\partial z_{ia} = -m_a\sum_k m_k\tanh\bigl((z_{ia}-z_{ik})/2\bigr)`
    (:math:`m` the mask of non-target classes): memory stays bounded on any number of rows,
    where autograd would keep every :math:`K\times K` block.

    Args (of :meth:`apply`): ``rows (M, K)`` logits, ``target (M,)`` class indices.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, rows: Tensor, target: Tensor) -> Tensor:
        """Sum the pairwise terms block by block; save only the inputs."""
        ctx.save_for_backward(rows, target)
        total = rows.new_zeros(())
        for z, m in _blocks(rows, target):
            pair = F.logsigmoid(z.unsqueeze(2) - z.unsqueeze(1))  # (r, K, K): log s(z_j - z_k)
            total += torch.einsum("rj,rjk,rk->", m, pair, m)
        # The diagonal j == k adds log s(0) = -log 2 once per non-target class.
        return total + rows.shape[0] * (rows.shape[1] - 1) * math.log(2.0)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_total: Tensor) -> tuple[Tensor, None]:
        """Rebuild each block and apply the analytic gradient."""
        rows, target = ctx.saved_tensors
        grad = torch.empty_like(rows)
        start = 0
        for z, m in _blocks(rows, target):
            tanh = torch.tanh(0.5 * (z.unsqueeze(2) - z.unsqueeze(1)))  # (r, K, K)
            block = -m * torch.einsum("rak,rk->ra", tanh, m)
            grad[start : start + z.shape[0]] = block
            start += z.shape[0]
        return grad * grad_total, None


def _blocks(rows: Tensor, target: Tensor):
    """Yield ``(z, mask)`` blocks of rows; ``mask`` is 1 on the non-target classes."""
    n_cls = rows.shape[1]
    step = max(1, _BLOCK_ELEMENTS // (n_cls * n_cls))
    for start in range(0, rows.shape[0], step):
        z = rows[start : start + step]
        m = torch.ones_like(z).scatter_(1, target[start : start + step].unsqueeze(1), 0.0)
        yield z, m


class CPC(RegularizedCE):
    r"""Calibration by pairwise constraints (CPC): cross-entropy plus BDC and BEC.

    BDC and BEC are the binary discrimination and binary exclusion constraints:

    .. math::

        \mathcal{L} = \mathrm{CE} + \lambda_{bdc}\,\mathrm{BDC} + \lambda_{bec}\,\mathrm{BEC},
        \qquad
        \mathrm{BDC} = -\frac{1}{N}\sum_{i=1}^{N}\frac{1}{K-1}\sum_{j\ne y_i}
        \log\sigma(z_{i,y_i}-z_{ij}),

    .. math::

        \mathrm{BEC} = -\frac{1}{N}\sum_{i=1}^{N}\frac{1}{(K-1)(K-2)}
        \sum_{j\ne y_i}\sum_{k\ne y_i,\,k\ne j}\tfrac12\log\sigma(z_{ij}-z_{ik})

    over the :math:`N` valid rows and :math:`K` classes; :math:`z_{ik}` the logits,
    :math:`y_i` the target, :math:`\sigma` the logistic function, CE the mean cross-entropy.
    BDC asks the target to beat each other class in a binary contest; BEC asks each pair of
    non-target classes to stay undecided. The double sum excludes :math:`j=k` (the public code
    includes it, which only adds the constant :math:`\tfrac{1}{2(K-2)}\log 2`). BEC is
    :math:`O(K^2)` per row; it is evaluated block by block with an analytic gradient
    (:class:`PairwiseExclusion`), so memory stays bounded. With :math:`K=2` there is no pair
    and BEC is 0.

    Parts (unweighted): ``"ce"``, ``"bdc"`` and ``"bec"``, so that
    ``total = ce + lambda_bdc * bdc + lambda_bec * bec``.

    Args:
        lambda_bdc: :math:`\lambda_{bdc} \ge 0`; default 0.1.
        lambda_bec: :math:`\lambda_{bec} \ge 0`; default 1. Both defaults are the public
            configuration the ACLS paper compares against (docs/REFERENCE.md).
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[1.0, 0.0, 0.0]])
        >>> total, parts = CPC().forward_with_parts(logits, torch.tensor([0]))
        >>> round(parts["bdc"].item(), 6)  # -log sigmoid(1)
        0.313262
        >>> round(parts["bec"].item(), 6)  # -(1/2) log sigmoid(0)
        0.346574

    References:
        Cheng, Vasconcelos. *Calibrating Deep Neural Networks by Pairwise Constraints.*
        CVPR 2022.
    """

    part_names = ("ce", "bdc", "bec")

    def __init__(
        self,
        lambda_bdc: float = 0.1,
        lambda_bec: float = 1.0,
        ignore_index: int = -100,
        validate: bool = True,
    ) -> None:
        super().__init__(ignore_index, validate)
        self.lambda_bdc = check_number("lambda_bdc", lambda_bdc, low=0.0)
        self.lambda_bec = check_number("lambda_bec", lambda_bec, low=0.0)

    def _regularizers(
        self, batch: Batch, log_probs: Tensor, ce_rows: Tensor
    ) -> dict[str, tuple[float, Tensor]]:
        z, n_cls = batch.logits, batch.num_classes
        z_target = z.gather(1, batch.target.unsqueeze(1))
        # Sum over all k of log s(z_y - z_k), minus the k = y term log s(0) = -log 2.
        wins = F.logsigmoid(z_target - z).sum(1) + math.log(2.0)
        bdc = -batch.mean(wins) / (n_cls - 1) if n_cls > 1 else z.sum() * 0.0
        if n_cls > 2:
            rows = batch.rows(z)
            target = batch.rows(batch.target.unsqueeze(1)).squeeze(1)
            pairs = PairwiseExclusion.apply(rows, target)
            bec = -0.5 * pairs / ((n_cls - 1) * (n_cls - 2) * batch.denominator)
        else:
            bec = z.sum() * 0.0
        return {"bdc": (self.lambda_bdc, bdc), "bec": (self.lambda_bec, bec)}
