"""Class-wise (static) calibration error over ``num_classes`` classes.

Inputs and conventions: :mod:`lightning_calib.metrics`; the functions:
:mod:`lightning_calib.metrics.functional.classwise`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_calib.metrics import functional as F
from lightning_calib.metrics._base import _ExactMetric
from lightning_calib.metrics._plot import plot_reliability_diagram

__all__ = ["ClasswiseECE"]

_F64 = torch.float64


class ClasswiseECE(_ExactMetric):
    r"""Class-wise (static) calibration error over ``num_classes`` classes, pooled rows.

    .. math::
        \mathrm{CECE} = \frac{1}{K}\sum_{c=0}^{K-1}\sum_{b}\frac{|B_{cb}|}{N}
        \bigl|\mathrm{acc}_{cb} - \mathrm{conf}_{cb}\bigr|,
        \qquad B_{cb} = \{i : p_{ic} \in (b/B, (b+1)/B]\}

    with :math:`p_{ic}` the softmax probability of class :math:`c` for row :math:`i`,
    :math:`\mathrm{conf}_{cb}` its mean over the bin, :math:`\mathrm{acc}_{cb}` the fraction of
    the bin's rows with target :math:`c`, :math:`N` the number of valid rows and :math:`K` =
    ``num_classes`` (given, not inferred from the labels seen: classes absent from the data
    still count, with their probabilities against an accuracy of 0).

    State: ``(K, n_bins)`` count (int64), confidence sum (float64), target-hit count (int64),
    summed across processes.

    Args:
        num_classes: :math:`K`; ``preds`` must have this many classes in dim 1.
        n_bins: number of equal-width bins :math:`B`.
        ignore_index: target value whose rows are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = ClasswiseECE(num_classes=2, n_bins=4, from_logits=False)
        >>> metric.update(torch.tensor([[0.25, 0.75], [0.75, 0.25]]), torch.tensor([1, 1]))
        >>> metric.compute().item()
        0.5
    """

    count: Tensor
    conf_sum: Tensor
    correct_sum: Tensor

    def __init__(
        self,
        num_classes: int,
        n_bins: int = 15,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            ignore_index,
            from_logits,
            validate_args,
            n_bins=n_bins,
            num_classes=num_classes,
            **kwargs,
        )
        self.num_classes = num_classes
        self.n_bins = n_bins
        self._add_sum_state("count", (num_classes, n_bins), torch.long)
        self._add_sum_state("conf_sum", (num_classes, n_bins), _F64)
        self._add_sum_state("correct_sum", (num_classes, n_bins), torch.long)

    def row_pass_needs(self) -> dict[str, Any] | None:  # noqa: D102
        return {"classwise_bins": (self.n_bins,)}

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Add every class probability of the batch's valid rows to the per-class bins.

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it.
        """
        bins = (self.n_bins,)
        passed = self._rows(preds, target, rows, classwise_bins=bins)
        count, conf_sum, correct_sum = passed.classwise[self.n_bins]
        self._add_to(count=count, conf_sum=conf_sum, correct_sum=correct_sum)

    def compute(self) -> Tensor:
        """Mean over classes of the per-class ECE (float64 scalar; NaN with no rows)."""
        return F.classwise_ece_from_stats(self.count, self.conf_sum, self.correct_sum)

    def compute_per_class(self) -> Tensor:
        """The ``(num_classes,)`` per-class ECEs over all processes."""
        s = self._synced_states()
        return F.classwise_ece_from_stats(
            s["count"], s["conf_sum"], s["correct_sum"], average=False
        )

    def plot(self, val: Any = None, ax: Any = None, class_index: int | None = None) -> Any:
        """Reliability diagram of one class's probabilities, or of all classes pooled.

        Args:
            val: with a value, torchmetrics' value plot instead.
            ax: a matplotlib ``Axes``, or ``None`` for a new figure.
            class_index: the class to draw; ``None`` pools the (row, class) pairs of all classes.

        Returns:
            ``(fig, ax)``.
        """
        if val is not None:
            return self._plot(val, ax)
        s = self._synced_states()
        if class_index is None:
            count, conf_sum, correct_sum = (
                s[k].sum(0) for k in ("count", "conf_sum", "correct_sum")
            )
            title = "ClasswiseECE (all classes pooled)"
            value = F.classwise_ece_from_stats(s["count"], s["conf_sum"], s["correct_sum"])
        else:
            count, conf_sum, correct_sum = (
                s[k][class_index] for k in ("count", "conf_sum", "correct_sum")
            )
            title = f"ClasswiseECE, class {class_index}"
            value = F.ece_from_stats(count, conf_sum, correct_sum)
        edges = torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=_F64)
        return plot_reliability_diagram(
            edges[:-1],
            edges[1:],
            count,
            conf_sum,
            correct_sum,
            ax=ax,
            title=title,
            value=float(value),
        )
