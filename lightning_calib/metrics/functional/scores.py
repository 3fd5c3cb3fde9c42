"""NLL, Brier score and top-k accuracy: exact sums over the valid rows.

:func:`_row_reduce` computes the Brier score and top-k hits chunk by chunk (float64 from the
logits, no softmax tensor) and sums them over the valid rows; the NLL and top-1 hits come from
the shared :func:`~._engine.row_pass`. ``*_stats`` give ``(sum, rows)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_calib.metrics.functional._engine import (
    _F64,
    RowPass,
    _as_3d,
    _chunk_elements,
    _chunks,
    _shifted_logits,
    row_pass,
)
from lightning_calib.metrics.functional._validation import (
    _arg_validation,
    _check_int,
    _tensor_validation,
)
from lightning_calib.rows import safe_target, valid_mask

__all__ = [
    "accuracy_stats_from_pass",
    "brier_score",
    "brier_score_stats",
    "negative_log_likelihood",
    "nll_stats",
    "nll_stats_from_pass",
    "topk_accuracy",
    "topk_accuracy_stats",
]


def _row_reduce(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None,
    kernel: str,
    from_logits: bool = True,
    k: int = 1,
) -> tuple[Tensor, Tensor]:
    """Sum over valid rows of a per-row quantity, and the row count.

    ``kernel``: ``"brier"`` (``sum_k (p_k - 1[k = y])**2``) or ``"topk"`` (1 when fewer
    than ``k`` classes score strictly above the target).
    """
    z3, t2 = _as_3d(preds, target)
    n, c, p = z3.shape
    keep = valid_mask(t2.reshape(-1), ignore_index)
    safe = safe_target(t2, keep).unsqueeze(1)
    device = preds.device
    out_dtype = torch.long if kernel == "topk" else _F64
    values = torch.empty((n, p), dtype=out_dtype, device=device)
    budget = _chunk_elements(device)
    buf = torch.empty(min(budget, max(1, z3.numel())), dtype=_F64, device=device)
    for rs, ps in _chunks(n, c, p, budget):
        zc, tc, out = z3[rs, :, ps], safe[rs, :, ps], values[rs, ps]
        if kernel == "topk":
            torch.sum(zc > zc.gather(1, tc), dim=1, out=out)
            continue
        if from_logits:
            d = _shifted_logits(zc, zc.amax(1, keepdim=True).to(_F64), buf, 1.0)
            d_y = d.gather(1, tc).squeeze(1)  # z_y - max z, exact
            s = d.exp_().sum(1)
            sq = d.square_().sum(1)
            out.copy_(sq.div_(s.square()).sub_(d_y.exp_().div_(s).mul_(2)).add_(1.0))
        else:
            probs = buf[: zc.numel()].view(zc.shape).copy_(zc)
            p_y = probs.gather(1, tc).squeeze(1)
            out.copy_(probs.square_().sum(1).sub_(p_y.mul_(2)).add_(1.0))
    flat = values.reshape(-1)
    if kernel == "topk":
        flat = flat < k
        if keep is not None:
            flat = flat[keep]
        return flat.sum(), torch.tensor(flat.numel(), device=device)
    if keep is not None:
        flat = flat[keep]
    return flat.sum(), torch.tensor(flat.numel(), device=device)


def nll_stats(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""``(sum of -log p_{i,y_i}, rows)`` over valid rows, float64 / int64.

    From logits, :math:`-\log p_{iy} = \log\sum_k e^{z_{ik} - \max z_i} - (z_{iy} - \max z_i)`
    in float64; from probabilities, :math:`-\log p_{iy}` (``inf`` when :math:`p_{iy} = 0`).
    """
    if validate_args:
        _arg_validation(None, ignore_index, from_logits)
        _tensor_validation(preds, target, ignore_index, from_logits)
    return nll_stats_from_pass(
        row_pass(preds, target, ignore_index, from_logits=from_logits, nll=True)
    )


def nll_stats_from_pass(rows: RowPass) -> tuple[Tensor, Tensor]:
    """:func:`nll_stats` of the batch a :class:`RowPass` (built with ``nll=True``) comes from."""
    if rows.nll is None:
        raise ValueError("the RowPass was built without nll=True.")
    if rows.keep is None:
        return rows.nll.sum(), torch.tensor(rows.nll.numel(), device=rows.nll.device)
    return torch.where(rows.keep, rows.nll, 0.0).sum(), rows.keep.sum()


def accuracy_stats_from_pass(rows: RowPass) -> tuple[Tensor, Tensor]:
    """Top-1 ``(hits, rows)`` of the batch a :class:`RowPass` was built from (ties are hits)."""
    if rows.keep is None:
        return rows.correct.sum(), torch.tensor(rows.correct.numel(), device=rows.correct.device)
    return torch.logical_and(rows.correct, rows.keep).sum(), rows.keep.sum()


def negative_log_likelihood(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Mean NLL (cross-entropy) over valid rows; see :class:`~lightning_calib.metrics.NLL`.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> round(negative_log_likelihood(logits, torch.tensor([0, 1])).item(), 6)
        0.693147
    """
    total, count = nll_stats(
        preds, target, ignore_index, from_logits=from_logits, validate_args=validate_args
    )
    return total / count


def brier_score_stats(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""``(sum of \sum_k (p_{ik} - 1[k = y_i])^2, rows)`` over valid rows, float64 / int64."""
    if validate_args:
        _arg_validation(None, ignore_index, from_logits, num_classes)
        _tensor_validation(preds, target, ignore_index, from_logits, num_classes)
    return _row_reduce(preds, target, ignore_index, "brier", from_logits)


def brier_score(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Mean multiclass Brier score; see :class:`~lightning_calib.metrics.BrierScore`.

    Example:
        >>> probs = torch.tensor([[0.5, 0.5], [0.75, 0.25]])
        >>> brier_score(probs, torch.tensor([0, 1]), from_logits=False).item()
        0.8125
    """
    total, count = brier_score_stats(
        preds,
        target,
        ignore_index,
        num_classes=num_classes,
        from_logits=from_logits,
        validate_args=validate_args,
    )
    return total / count


def topk_accuracy_stats(
    preds: Tensor,
    target: Tensor,
    k: int = 1,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(top-k hits, rows)`` over valid rows, int64.

    A row is a hit when fewer than ``k`` classes score strictly higher than its target (ties
    count as hits, as for the correctness of the calibration metrics). Needs no sort.
    """
    if validate_args:
        _arg_validation(None, ignore_index, from_logits)
        _check_int("k", k, 1)
        _tensor_validation(preds, target, ignore_index, from_logits)
        if k > preds.shape[1]:
            raise ValueError(
                f"`k` must be at most the number of classes {preds.shape[1]}; got {k}."
            )
    return _row_reduce(preds, target, ignore_index, "topk", from_logits, k)


def topk_accuracy(
    preds: Tensor,
    target: Tensor,
    k: int = 1,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Top-``k`` accuracy of one batch (float64); see :class:`~.TopKAccuracy`.

    Example:
        >>> logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
        >>> topk_accuracy(logits, torch.tensor([1, 1]), k=2).item()
        1.0
    """
    hits, count = topk_accuracy_stats(
        preds, target, k, ignore_index, from_logits=from_logits, validate_args=validate_args
    )
    return hits.to(_F64) / count
