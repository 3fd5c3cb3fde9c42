r"""NLL, Brier score and top-k accuracy as exact sum-state metrics.

torchmetrics has no exact equivalent taking logits, ``ignore_index`` and segmentation shapes
at once; these keep a float64 sum (or an int64 hit count) and an int64 row count, summed
across processes, so the value is that of the concatenated data on any number of processes.
Inputs as in :mod:`lightning_calib.metrics`; ``compute()`` with no row is NaN
(before any ``update`` torchmetrics also warns).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_calib.metrics import functional as F
from lightning_calib.metrics._base import _ExactMetric

__all__ = ["NLL", "BrierScore", "TopKAccuracy"]

_F64 = torch.float64


class _SumMetric(_ExactMetric):
    total: Tensor
    n_rows: Tensor

    def __init__(self, *args: Any, total_dtype: torch.dtype = _F64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_sum_state("total", (), total_dtype)
        self._add_sum_state("n_rows", (), torch.long)

    def _accumulate(self, total: Tensor, rows: Tensor) -> None:
        self._add_to(total=total, n_rows=rows)

    def compute(self) -> Tensor:
        """The mean over every valid row seen (float64 scalar; NaN when there is none)."""
        return self.total.to(_F64) / self.n_rows


class NLL(_SumMetric):
    r"""Negative log-likelihood (mean cross-entropy) over every valid row.

    .. math::
        \mathrm{NLL} = \frac{1}{N}\sum_i -\log p_{i,y_i},
        \qquad -\log p_{iy} = \log\sum_k e^{z_{ik} - \max_k z_{ik}} - (z_{iy} - \max_k z_{ik})

    computed from the logits in float64 (from probabilities: :math:`-\log p_{iy}`, infinite
    when :math:`p_{iy} = 0`); :math:`N` the number of valid rows.

    Args:
        ignore_index: target value whose rows are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = NLL(from_logits=False)
        >>> metric.update(torch.tensor([[0.5, 0.5], [0.75, 0.25]]), torch.tensor([0, 1]))
        >>> round(metric.compute().item(), 6)  # (log 2 + log 4) / 2
        1.039721
    """

    plot_upper_bound = None

    def __init__(
        self,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index, from_logits, validate_args, **kwargs)

    def row_pass_needs(self) -> dict[str, Any] | None:  # noqa: D102
        return {"nll": True}

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Add the batch's per-row NLLs.

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it.
        """
        self._accumulate(*F.nll_stats_from_pass(self._rows(preds, target, rows, nll=True)))


class BrierScore(_SumMetric):
    r"""Multiclass Brier score over every valid row.

    .. math::
        \mathrm{BS} = \frac{1}{N}\sum_i \sum_{k} \bigl(p_{ik} - \mathbb{1}[k = y_i]\bigr)^2
        = \frac{1}{N}\sum_i \Bigl(\sum_k p_{ik}^2 - 2 p_{i,y_i} + 1\Bigr)

    in float64; values in ``[0, 2]``.

    Args:
        num_classes: when given, ``preds`` must have this many classes (checked).
        ignore_index: target value whose rows are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = BrierScore(from_logits=False)
        >>> metric.update(torch.tensor([[0.5, 0.5], [0.75, 0.25]]), torch.tensor([0, 1]))
        >>> metric.compute().item()
        0.8125
    """

    plot_upper_bound = 2.0

    def __init__(
        self,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            ignore_index, from_logits, validate_args, num_classes=num_classes, **kwargs
        )
        self.num_classes = num_classes

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the batch's per-row Brier scores."""
        self._accumulate(
            *F.brier_score_stats(
                preds,
                target,
                self.ignore_index,
                num_classes=self.num_classes,
                from_logits=self.from_logits,
                validate_args=self.validate_args,
            )
        )


class TopKAccuracy(_SumMetric):
    r"""Top-``k`` accuracy over every valid row (micro average).

    .. math::
        \mathrm{acc}@k = \frac{1}{N}\sum_i \mathbb{1}\bigl[\#\{c : z_{ic} > z_{i,y_i}\} < k\bigr]

    A target tied with the ``k``-th score counts as a hit (as a target tied with the maximum
    counts as correct in the calibration metrics). State: int64 hits and rows.

    Args:
        k: how many top classes may contain the target (``k = 1``: accuracy).
        ignore_index: target value whose rows are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16); the
            ranking is the same either way.
        validate_args: check every ``update``'s inputs (including ``k <= C``).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = TopKAccuracy(k=2)
        >>> metric.update(torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]), torch.tensor([1, 0]))
        >>> metric.compute().item()
        0.5
    """

    higher_is_better = True

    def __init__(
        self,
        k: int = 1,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index, from_logits, validate_args, total_dtype=torch.long, **kwargs)
        F._check_int("k", k, 1)
        self.k = k

    def row_pass_needs(self) -> dict[str, Any] | None:  # noqa: D102
        return {} if self.k == 1 else None

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Add the batch's top-``k`` hits.

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it; top-1
        reads its correctness (the same tie rule), top-``k`` ranks the scores itself.
        """
        if self.k == 1 and rows is not None and rows.satisfies(self.ignore_index, self.from_logits):
            self._accumulate(*F.accuracy_stats_from_pass(rows))
            return
        self._accumulate(
            *F.topk_accuracy_stats(
                preds,
                target,
                self.k,
                self.ignore_index,
                from_logits=self.from_logits,
                validate_args=self.validate_args,
            )
        )
