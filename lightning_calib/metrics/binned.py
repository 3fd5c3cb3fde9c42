"""ECE and MCE: equal-width bins of the top-label confidence, and their binned base class.

The base keeps per-bin counts, confidence sums and correct counts (``O(n_bins)``, summed
across processes) and draws reliability diagrams. Inputs and conventions:
:mod:`lightning_calib.metrics`; the functions: :mod:`lightning_calib.metrics.functional.binned`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_calib.metrics import functional as F
from lightning_calib.metrics._base import _ExactMetric
from lightning_calib.metrics._plot import plot_reliability_diagram

__all__ = ["ECE", "MCE"]

_F64 = torch.float64


class _BinnedTopLabel(_ExactMetric):
    """Per-bin count / confidence sum / correct count of the top-label confidence."""

    count: Tensor
    conf_sum: Tensor
    correct_sum: Tensor

    def __init__(
        self,
        n_bins: int = 15,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index, from_logits, validate_args, n_bins=n_bins, **kwargs)
        self.n_bins = n_bins
        self._add_sum_state("count", (n_bins,), torch.long)
        self._add_sum_state("conf_sum", (n_bins,), _F64)
        self._add_sum_state("correct_sum", (n_bins,), torch.long)

    def row_pass_needs(self) -> dict[str, Any] | None:
        return {}

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Add the rows of one batch to the per-bin sums.

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it.
        """
        stats = F.binned_stats_from_pass(self._rows(preds, target, rows), self.n_bins)
        count, conf_sum, correct_sum = stats
        self._add_to(count=count, conf_sum=conf_sum, correct_sum=correct_sum)

    def reliability(self) -> dict[str, Tensor]:
        """Reliability-diagram data over all processes: bin edges, counts, confidence, accuracy.

        Returns:
            ``lower``, ``upper`` (bin edges), ``count``, ``confidence`` and ``accuracy`` (the
            per-bin means, NaN for empty bins), each ``(n_bins,)``.
        """
        s = self._synced_states()
        edges = torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=_F64)
        conf, acc = F.reliability_from_stats(s["count"], s["conf_sum"], s["correct_sum"])
        return {
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": s["count"],
            "confidence": conf,
            "accuracy": acc,
        }

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Reliability diagram of the accumulated rows; with ``val``, torchmetrics' value plot.

        Args:
            val: ``None`` for the reliability diagram (per-bin accuracy against confidence, the
                gap to the diagonal, and the fraction of rows per bin); a value or a sequence of
                values to plot them as torchmetrics does.
            ax: a matplotlib ``Axes``; see
                :func:`lightning_calib.metrics._plot.plot_reliability_diagram`.

        Returns:
            ``(fig, ax)``.
        """
        if val is not None:
            return self._plot(val, ax)
        s = self._synced_states()
        edges = torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=_F64)
        value = self._value_from(s["count"], s["conf_sum"], s["correct_sum"])
        return plot_reliability_diagram(
            edges[:-1],
            edges[1:],
            s["count"],
            s["conf_sum"],
            s["correct_sum"],
            ax=ax,
            title=type(self).__name__,
            value=float(value),
        )

    def _value_from(self, count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> Tensor:
        raise NotImplementedError

    def compute(self) -> Tensor:
        """The metric over every row seen (float64 scalar; NaN when there is none)."""
        return self._value_from(self.count, self.conf_sum, self.correct_sum)


class ECE(_BinnedTopLabel):
    r"""Expected calibration error with equal-width bins, pooled over every valid row.

    .. math::
        \mathrm{ECE} = \sum_{b=0}^{B-1} \frac{|B_b|}{N}\,\bigl|\mathrm{acc}_b -
        \mathrm{conf}_b\bigr|, \qquad B_b = \{i : \hat p_i \in (b/B, (b+1)/B]\}

    where :math:`N` is the number of valid rows, :math:`\hat p_i = \max_k \mathrm{softmax}(z_i)_k`
    the confidence of row :math:`i`, :math:`\mathrm{conf}_b` its mean and
    :math:`\mathrm{acc}_b` the fraction of correct rows in bin :math:`b` (a confidence of 0
    goes to the first bin, of 1 to the last; empty bins contribute nothing). For segmentation
    every valid pixel of the evaluated set is a row: the dataset-level pixel ECE.

    State: per-bin ``count`` (int64), ``conf_sum`` (float64) and ``correct_sum`` (int64),
    ``O(n_bins)``, summed across processes: exact, batch-size independent, the same on 1 or
    N processes.

    Args:
        n_bins: number of equal-width bins :math:`B`.
        ignore_index: target value whose rows are dropped (255 on VOC).
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
        validate_args: check every ``update``'s inputs (shapes, dtypes, finite ``preds``,
            target range); turn off in hot loops.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ...).

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> metric = ECE(n_bins=4, from_logits=False)
        >>> metric.update(probs[:2], torch.tensor([1, 1]))
        >>> metric.update(probs[2:], torch.tensor([1, 0]))
        >>> metric.compute().item()
        0.140625
    """

    def _value_from(self, count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> Tensor:
        return F.ece_from_stats(count, conf_sum, correct_sum)


class MCE(_BinnedTopLabel):
    r"""Maximum calibration error over the non-empty equal-width bins, pooled over every row.

    .. math::
        \mathrm{MCE} = \max_{b : |B_b| > 0} \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|

    with the bins, symbols and states of :class:`ECE`. NaN when no row was seen.

    Args:
        n_bins: number of equal-width bins.
        ignore_index: target value whose rows are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> metric = MCE(n_bins=4, from_logits=False)
        >>> metric.update(probs, torch.tensor([1, 1, 1, 0]))
        >>> metric.compute().item()
        0.1875
    """

    def _value_from(self, count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> Tensor:
        return F.mce_from_stats(count, conf_sum, correct_sum)
