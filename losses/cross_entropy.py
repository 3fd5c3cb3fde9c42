"""Cross-entropy, the base every regularized loss composes with, and label smoothing."""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from losses.base import Batch, CalibrationLoss, check_number

__all__ = ["CrossEntropy", "LabelSmoothing", "RegularizedCE"]


class CrossEntropy(CalibrationLoss):
    r"""Cross-entropy over the valid rows: the baseline every other loss extends.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -\log p_{i,y_i},
        \qquad p_i = \mathrm{softmax}(z_i)

    with :math:`z_i` the logits of row :math:`i`, :math:`y_i` its target and :math:`N` the
    number of valid rows (``target != ignore_index``). Equal to
    ``F.cross_entropy(logits, target, ignore_index=ignore_index)`` except that a batch with no
    valid row (an empty batch, or every row ignored) gives a zero (attached to the graph)
    instead of NaN, and that the target may have any integer dtype, as for every loss here
    (torch's kernel wants int64: another dtype is converted, one pass over the target).

    Parts: none (``{}``).

    Args:
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> round(CrossEntropy()(logits, torch.tensor([0, -100])).item(), 6)  # log(1 + 2e^-2)
        0.239545
    """

    def _compute(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        logits, target = batch.logits, batch.raw_target
        if target.dtype != torch.int64:
            # torch's kernel takes int64 class indices (uint8 only without spatial dims); the
            # other losses take any integer dtype, so convert: one pass over the target only.
            target = target.long()
        keep = batch.keep
        if target.numel() and (keep is None or (keep.device.type == "cpu" and bool(keep.any()))):
            # At least one valid row: torch's mean is exactly sum / #valid, one node fewer.
            return F.cross_entropy(logits, target, ignore_index=self.ignore_index), {}
        # No valid row (an empty batch, or every row ignored: 0 / 0 in torch's mean), or an
        # accelerator where counting them would wait for the device: the sum over the count,
        # at least 1, so no valid row gives the attached zero every loss gives (Batch.mean).
        total = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
        return total / batch.denominator, {}


class RegularizedCE(CalibrationLoss):
    r"""Cross-entropy plus weighted regularizers that share its log-probabilities.

    .. math::

        \mathcal{L} = w_{ce}\,\mathrm{CE} + \sum_j w_j R_j

    Subclasses implement :meth:`_regularizers`, which receives the batch, the
    log-probabilities :math:`\log p` (class dim 1) and the per-row cross-entropy, and returns
    ``{name: (w_j, R_j)}`` with each :math:`R_j` already averaged over the valid rows. The
    parts are ``{"ce": CE, name: R_j, ...}``, unweighted.
    """

    ce_weight: float = 1.0

    def _compute(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        log_probs = F.log_softmax(batch.logits, dim=1)
        ce_rows = -log_probs.gather(1, batch.target.unsqueeze(1)).squeeze(1)
        ce = batch.mean(ce_rows)
        total = ce if self.ce_weight == 1.0 else self.ce_weight * ce
        parts = {"ce": ce}
        for name, (weight, value) in self._regularizers(batch, log_probs, ce_rows).items():
            total = total + weight * value
            parts[name] = value
        return total, parts

    @abstractmethod
    def _regularizers(
        self, batch: Batch, log_probs: Tensor, ce_rows: Tensor
    ) -> dict[str, tuple[float, Tensor]]:
        """Return ``{name: (weight, value)}``, each value a mean over the valid rows."""


class LabelSmoothing(RegularizedCE):
    r"""Label smoothing: cross-entropy against ``(1 - alpha) * onehot + alpha / K``.

    .. math::

        \mathcal{L} = (1-\alpha)\,\frac{1}{N}\sum_{i=1}^{N} -\log p_{i,y_i}
        \;+\; \alpha\,\frac{1}{N}\sum_{i=1}^{N}\frac{1}{K}\sum_{k=1}^{K} -\log p_{ik}

    over the :math:`N` valid rows and :math:`K` classes; :math:`p_i=\mathrm{softmax}(z_i)`,
    :math:`y_i` the target, :math:`\alpha` the smoothing. Equal to
    ``F.cross_entropy(logits, target, label_smoothing=alpha, ignore_index=...)``. Its implicit
    target is the constant :math:`(1-\alpha)y + \alpha/K`: uniform, neither adaptive nor
    conditional (the ACLS paper's point of comparison).

    Parts (unweighted): ``"ce"`` the cross-entropy and ``"uniform"`` the mean over classes of
    :math:`-\log p_{ik}`, so that ``total = (1 - alpha) * ce + alpha * uniform``.

    Args:
        alpha: :math:`\alpha\in[0, 1]`; default 0.05, the value in the ACLS
            paper's comparison (docs/REFERENCE.md).
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> loss = LabelSmoothing(alpha=0.1)
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> # ce = log(1 + 2e^-2) = 0.239545; uniform = ce + 4/3 = 1.572878
        >>> round(loss(logits, torch.tensor([0])).item(), 6)  # 0.9 * ce + 0.1 * uniform
        0.372878

    References:
        Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. *Rethinking the Inception Architecture for
        Computer Vision.* CVPR 2016.
    """

    part_names = ("ce", "uniform")

    def __init__(self, alpha: float = 0.05, ignore_index: int = -100, validate: bool = True):
        super().__init__(ignore_index, validate)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0)
        self.ce_weight = 1.0 - self.alpha

    def _regularizers(
        self, batch: Batch, log_probs: Tensor, ce_rows: Tensor
    ) -> dict[str, tuple[float, Tensor]]:
        return {"uniform": (self.alpha, batch.mean(-log_probs.mean(1)))}
