"""Maximum mean calibration error (MMCE) as a training penalty, in O(N log N)."""

from __future__ import annotations

import torch
from torch import Tensor

from losses.base import Batch, check_number
from losses.cross_entropy import RegularizedCE

__all__ = ["MMCE", "mmce_penalty"]


def mmce_penalty(confidence: Tensor, correct: Tensor, bandwidth: float = 0.4) -> Tensor:
    r"""The (squared) MMCE of ``N`` rows with the Laplacian kernel, exactly, in O(N log N).

    .. math::

        \mathrm{MMCE}_m = \frac{1}{N^2}\sum_{i,j}(c_i-r_i)(c_j-r_j)\,
        e^{-|r_i-r_j|/b}

    For the confidences sorted increasingly, :math:`e^{-|r_i-r_j|/b}=e^{-r_i/b}e^{r_j/b}` when
    :math:`j \le i`, so the double sum is
    :math:`\sum_i a_i^2 + 2\sum_i a_i e^{-r_i/b}\sum_{j<i} a_j e^{r_j/b}` (:math:`a=c-r`): one
    sort and one cumulative sum instead of an :math:`N\times N` kernel matrix, which makes the
    penalty usable on every pixel of a segmentation batch. Computed in float64 (float32 on
    devices without float64), with exponents centred on the middle of the confidence range.

    Args:
        confidence: ``(N,)`` values :math:`r_i` in ``[0, 1]`` (differentiable).
        correct: ``(N,)`` values :math:`c_i` (0/1, not differentiated).
        bandwidth: the kernel width :math:`b \ge 10^{-3}` (0.4 in Kumar et al.).

    Returns:
        The scalar :math:`\mathrm{MMCE}_m` in ``confidence``'s dtype (0 when ``N == 0``).

    Example:
        >>> r = torch.tensor([0.9, 0.6])
        >>> c = torch.tensor([1.0, 0.0])
        >>> # (0.1^2 + 0.6^2 + 2 * 0.1 * (-0.6) * exp(-0.3 / 0.4)) / 2^2
        >>> round(mmce_penalty(r, c).item(), 6)
        0.078329
    """
    n = confidence.numel()
    if n == 0:
        return confidence.sum()
    dtype = torch.float32 if confidence.device.type == "mps" else torch.float64
    r = confidence.reshape(-1).to(dtype)
    a = correct.reshape(-1).to(dtype) - r
    r_sorted, order = torch.sort(r)
    a_sorted = a[order]
    centred = (r_sorted - 0.5 * (r_sorted[0] + r_sorted[-1]).detach()) / bandwidth
    weighted = a_sorted * torch.exp(centred)
    below = torch.cumsum(weighted, 0) - weighted  # sum_{j < i} a_j e^{r_j / b}
    total = (a_sorted * a_sorted).sum() + 2.0 * (a_sorted * torch.exp(-centred) * below).sum()
    return (total / (n * n)).to(confidence.dtype)


class MMCE(RegularizedCE):
    r"""Cross-entropy plus the maximum mean calibration error (Kumar et al. 2018).

    .. math::

        \mathcal{L} = \frac{1}{N}\sum_{i=1}^{N} -\log p_{i,y_i} + \lambda\,\mathrm{MMCE}_m,
        \qquad
        \mathrm{MMCE}_m = \frac{1}{N^2}\sum_{i=1}^{N}\sum_{j=1}^{N}(c_i-r_i)(c_j-r_j)\,
        e^{-|r_i-r_j|/b}

    over the :math:`N` valid rows of the batch; :math:`p_i=\mathrm{softmax}(z_i)`,
    :math:`y_i` the target, :math:`r_i=\max_k p_{ik}` the confidence (differentiable, in both
    the residual and the kernel), :math:`c_i=1[z_{i,y_i}=\max_k z_{ik}]` the correctness (a
    tie for the max counts as correct), :math:`b` the Laplacian kernel's bandwidth and
    :math:`\lambda` the weight. **No square root**: :math:`\mathrm{MMCE}_m` is the squared
    MMCE, as in the formula of the reference and the public code of Mukhoti et al.; Kumar et
    al. penalize :math:`\sqrt{\mathrm{MMCE}_m}`, whose gradient is unbounded near 0. The
    double sum is evaluated exactly in O(N log N) (:func:`mmce_penalty`), so it runs on every
    valid pixel of a segmentation batch.

    Parts (unweighted): ``"ce"`` the cross-entropy and ``"mmce"`` :math:`\mathrm{MMCE}_m`, so
    that ``total = ce + weight * mmce``.

    Args:
        weight: :math:`\lambda \ge 0`; default 1, the public configuration the ACLS
            paper compares against (docs/REFERENCE.md).
        bandwidth: :math:`b \ge 10^{-3}`; default 0.4, the kernel width of Kumar et al.
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.

    Example:
        >>> import torch
        >>> logits = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6]]))
        >>> total, parts = MMCE().forward_with_parts(logits, torch.tensor([0, 0]))
        >>> round(parts["mmce"].item(), 6)  # r = (0.9, 0.6), c = (1, 0): as mmce_penalty's
        0.078329

    References:
        Kumar, Sarawagi, Jain. *Trainable Calibration Measures for Neural Networks from Kernel
        Mean Embeddings.* ICML 2018.
    """

    part_names = ("ce", "mmce")

    def __init__(
        self,
        weight: float = 1.0,
        bandwidth: float = 0.4,
        ignore_index: int = -100,
        validate: bool = True,
    ) -> None:
        super().__init__(ignore_index, validate)
        self.weight = check_number("weight", weight, low=0.0)
        self.bandwidth = check_number("bandwidth", bandwidth, low=1e-3)

    def _regularizers(
        self, batch: Batch, log_probs: Tensor, ce_rows: Tensor
    ) -> dict[str, tuple[float, Tensor]]:
        logits = batch.logits
        confidence = log_probs.amax(1).exp()
        correct = logits.gather(1, batch.target.unsqueeze(1)).squeeze(1) >= logits.amax(1)
        stats = batch.rows(torch.stack([confidence, correct.to(confidence.dtype)], 1))
        return {"mmce": (self.weight, mmce_penalty(stats[:, 0], stats[:, 1], self.bandwidth))}
