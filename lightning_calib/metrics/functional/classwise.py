"""Class-wise (static) calibration error: every class probability binned, per class."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_calib.metrics.functional._engine import (
    _F64,
    _as_3d,
    _bincount,
    _chunk_elements,
    _chunks,
    _shifted_logits,
)
from lightning_calib.metrics.functional._validation import _arg_validation, _tensor_validation
from lightning_calib.metrics.functional.binned import bin_index, ece_from_stats
from lightning_calib.rows import valid_mask

__all__ = ["classwise_calibration_error", "classwise_calibration_stats", "classwise_ece_from_stats"]


def classwise_calibration_stats(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-(class, bin) ``(count, conf_sum, correct_sum)``, each ``(num_classes, n_bins)``.

    Every class probability :math:`p_{ic}` of every valid row is binned (equal width,
    :func:`bin_index`); ``correct_sum`` counts the rows with ``target == c``.
    """
    if validate_args:
        _arg_validation(n_bins, ignore_index, from_logits, num_classes)
        _tensor_validation(preds, target, ignore_index, from_logits, num_classes)
    z3, t2 = _as_3d(preds, target)
    n, c, p = z3.shape
    keep = valid_mask(t2.reshape(-1), ignore_index)
    keep2 = None if keep is None else keep.view(n, p)
    size = c * n_bins * 2
    device = preds.device
    counts = torch.zeros(size, dtype=torch.long, device=device)
    conf_sums = torch.zeros(size, dtype=_F64, device=device)
    budget = _chunk_elements(device)
    buf = torch.empty(min(budget, max(1, z3.numel())), dtype=_F64, device=device)
    offset = (torch.arange(c, device=device) * (2 * n_bins)).view(1, c, 1)
    classes = torch.arange(c, device=device).view(1, c, 1)
    for rs, ps in _chunks(n, c, p, budget):
        zc = z3[rs, :, ps]
        if from_logits:
            e = _shifted_logits(zc, zc.amax(1, keepdim=True).to(_F64), buf, 1.0).exp_()
            probs = e.div_(e.sum(1, keepdim=True))
        else:
            probs = buf[: zc.numel()].view(zc.shape).copy_(zc)
        hit = t2[rs, ps].unsqueeze(1) == classes
        idx = bin_index(probs, n_bins).mul_(2).add_(hit).add_(offset)
        if keep2 is not None:
            idx.masked_fill_(~keep2[rs, ps].unsqueeze(1), size)
        counts += _bincount(idx.reshape(-1), size)
        conf_sums += _bincount(idx.reshape(-1), size, probs.reshape(-1))
    counts = counts.view(c, n_bins, 2)
    return counts.sum(2), conf_sums.view(c, n_bins, 2).sum(2), counts[..., 1].clone()


def classwise_ece_from_stats(
    count: Tensor, conf_sum: Tensor, correct_sum: Tensor, *, average: bool = True
) -> Tensor:
    r"""Class-wise ECE: :math:`\frac{1}{K}\sum_c \mathrm{ECE}_c`, or the ``(K,)`` vector.

    :math:`\mathrm{ECE}_c` is :func:`ece_from_stats` of class ``c``'s bins; every class has the
    same :math:`N` (all valid rows). NaN when there are no rows.
    """
    per_class = ece_from_stats(count, conf_sum, correct_sum)
    return per_class.mean() if average else per_class


def classwise_calibration_error(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Class-wise ECE of one batch; see :class:`~lightning_calib.metrics.ClasswiseECE`.

    Example:
        >>> probs = torch.tensor([[0.25, 0.75], [0.75, 0.25]])
        >>> classwise_calibration_error(probs, torch.tensor([1, 1]), num_classes=2, n_bins=4,
        ...     from_logits=False).item()
        0.5
    """
    stats = classwise_calibration_stats(
        preds,
        target,
        num_classes,
        n_bins,
        ignore_index,
        from_logits=from_logits,
        validate_args=validate_args,
    )
    return classwise_ece_from_stats(*stats)
