"""Confidence (entropy) penalty."""

from __future__ import annotations

from torch import Tensor

from losses.base import Batch, check_number
from losses.cross_entropy import RegularizedCE

__all__ = ["EntropyPenalty"]


class EntropyPenalty(RegularizedCE):
    r"""Confidence penalty (ECP): cross-entropy minus a bonus for predictive entropy.

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -\log p_{i,y_i}
        \;-\; \beta\,\frac{1}{N}\sum_{i=1}^{N} H(p_i),
        \qquad H(p_i) = -\sum_{k=1}^{K} p_{ik}\log p_{ik}

    over the :math:`N` valid rows and :math:`K` classes; :math:`p_i=\mathrm{softmax}(z_i)`,
    :math:`y_i` the target, :math:`\beta` the weight. The entropy is **summed** over the
    classes, as in the formula of Pereyra et al.; the public code averages it over the classes
    too, an effective weight of :math:`\beta/K` (with :math:`K = 200`, a penalty 200 times
    weaker): pass ``beta / K`` to reproduce it. The implicit target is
    :math:`\hat y_k = y_k - \beta p_k(\log p_k + H(p))`.

    Parts (unweighted): ``"ce"`` the cross-entropy and ``"entropy"`` the mean entropy, so that
    ``total = ce - beta * entropy``.

    Args:
        beta: :math:`\beta \ge 0`; default 0.1, the public configuration the
            ACLS paper compares against (docs/REFERENCE.md).
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> loss = EntropyPenalty(beta=0.5)
        >>> total, parts = loss.forward_with_parts(torch.zeros(1, 4), torch.tensor([2]))
        >>> round(parts["entropy"].item(), 6), round(total.item(), 6)  # log 4, log 4 / 2
        (1.386294, 0.693147)

    References:
        Pereyra, Tucker, Chorowski, Kaiser, Hinton. *Regularizing Neural Networks by
        Penalizing Confident Output Distributions.* ICLR 2017 workshop.
    """

    part_names = ("ce", "entropy")

    def __init__(self, beta: float = 0.1, ignore_index: int = -100, validate: bool = True):
        super().__init__(ignore_index, validate)
        self.beta = check_number("beta", beta, low=0.0)

    def _regularizers(
        self, batch: Batch, log_probs: Tensor, ce_rows: Tensor
    ) -> dict[str, tuple[float, Tensor]]:
        entropy_rows = -(log_probs.exp() * log_probs).sum(1)
        return {"entropy": (-self.beta, batch.mean(entropy_rows))}
