"""Adaptive (equal-mass) ECE, exact (``O(N)`` list states) or streaming (bounded error).

Inputs and conventions: :mod:`lightning_calib.metrics`; the functions:
:mod:`lightning_calib.metrics.functional.adaptive`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from lightning_calib.metrics import functional as F
from lightning_calib.metrics._base import _ExactMetric
from lightning_calib.metrics._plot import plot_reliability_diagram

__all__ = ["AdaptiveECE"]

_F64 = torch.float64


class AdaptiveECE(_ExactMetric):
    r"""Adaptive (equal-mass) ECE: bins holding equal numbers of rows.

    .. math::
        \mathrm{AECE} = \frac{1}{N}\sum_{b=0}^{n-1}\Bigl|\sum_{i\in B_b}(\hat p_i - c_i)\Bigr|,
        \qquad B_b = \{i : e_b < \hat p_i \le e_{b+1}\},

    :math:`B_0` also closed at :math:`e_0` (the fix: the public code drops the least confident
    row), :math:`c_i \in \{0, 1\}` the correctness of row :math:`i`, and edges
    :math:`e = \mathrm{interp}(\mathrm{linspace}(0, N, n+1), \mathrm{arange}(N),
    \mathrm{sort}(\hat p))` (:func:`~.functional.adaptive_bin_edges`).

    Two modes:

    * ``mode="exact"`` keeps every confidence and correctness (list states, ``"cat"`` across
      processes): ``O(N)`` memory, right for classification sets.
    * ``mode="streaming"`` keeps, per correctness, the count and confidence sum of
      ``53 * resolution + 1`` sub-bins, logarithmic in ``1 - conf``
      (:func:`~.functional.fine_bin_index`; 1.7 MB of state at the default): ``O(resolution)``
      memory, summed across processes, for pixels. Equal-mass bins are assembled from whole
      sub-bins (:func:`~.functional.streaming_adaptive_ece`). Only sub-bins straddling an
      exact edge (at most one per edge, :math:`n-1` in all) can be misassigned, whence

      .. math::
          |\mathrm{AECE}_{\mathrm{streaming}} - \mathrm{AECE}| \le \frac{2}{N}
          \sum_{j\,\mathrm{straddling}}\ \sum_{i \in j} |\hat p_i - c_i|
          \le \frac{2(n-1)}{N}\max_j \sum_{i \in j} |\hat p_i - c_i|,

      computed exactly from the state by :meth:`error_bound`. Within a sub-bin, confidences
      differ by at most a fraction ``1/resolution`` of ``1 - conf`` (and by
      ``1/(2 resolution)`` below 1/2), and correct rows near a confidence of 1 add only
      ``1 - conf`` to the bound: the bound stays small where segmentation pixels pile up.

    Args:
        n_bins: number of equal-mass bins :math:`n`.
        mode: ``"exact"`` or ``"streaming"``.
        resolution: streaming sub-bins per binary octave of ``1 - conf``, a power of two
            (between 2 and 2**20).
        ignore_index: target value whose rows are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> target = torch.tensor([1, 1, 1, 0])
        >>> exact = AdaptiveECE(n_bins=2, from_logits=False)
        >>> exact.update(probs, target)
        >>> exact.compute().item()
        0.078125
        >>> streaming = AdaptiveECE(n_bins=2, mode="streaming", from_logits=False)
        >>> streaming.update(probs, target)
        >>> streaming.compute().item(), streaming.error_bound().item()
        (0.078125, 0.0)
    """

    confidences: list[Tensor]
    correct: list[Tensor]
    fine_count: Tensor
    fine_conf_sum: Tensor

    def __init__(
        self,
        n_bins: int = 15,
        mode: str = "exact",
        resolution: int = 1024,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index, from_logits, validate_args, n_bins=n_bins, **kwargs)
        if mode not in ("exact", "streaming"):
            raise ValueError(f"`mode` must be 'exact' or 'streaming'; got {mode!r}.")
        if (
            isinstance(resolution, bool)
            or not isinstance(resolution, int)
            or not 2 <= resolution <= 2**20
            or resolution & (resolution - 1)
        ):
            raise ValueError(
                f"`resolution` must be a power of two in [2, 2**20]; got {resolution!r}."
            )
        self.n_bins = n_bins
        self.mode = mode
        self.resolution = resolution
        if mode == "exact":
            self.add_state("confidences", [], dist_reduce_fx="cat")
            self.add_state("correct", [], dist_reduce_fx="cat")
        else:
            size = F.streaming_size(resolution)
            self._add_sum_state("fine_count", (size, 2), torch.long)
            self._add_sum_state("fine_conf_sum", (size, 2), _F64)

    def row_pass_needs(self) -> dict[str, Any] | None:  # noqa: D102
        return {}

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Keep the rows (exact) or add them to the sub-bin sums (streaming).

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it.
        """
        passed = self._rows(preds, target, rows)
        conf, correct, keep = passed.conf, passed.correct, passed.keep
        if self.mode == "exact":
            if keep is not None:
                conf, correct = conf[keep], correct[keep]
            self.confidences.append(conf)
            self.correct.append(correct)
            return
        count, conf_sum = F.streaming_fine_stats(conf, correct, keep, self.resolution)
        self._add_to(fine_count=count, fine_conf_sum=conf_sum)

    def _exact_rows(self, state: dict[str, Any]) -> tuple[Tensor, Tensor]:
        conf, correct = state["confidences"], state["correct"]  # lists, or tensors once synced
        if isinstance(conf, list) and not conf:
            return torch.zeros(0, dtype=_F64), torch.zeros(0, dtype=torch.bool)
        return dim_zero_cat(conf).to(_F64), dim_zero_cat(correct).bool()

    def _bins(self, state: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(lower, upper, count, conf_sum, correct_sum)`` of the equal-mass bins."""
        if self.mode == "exact":
            conf, correct = self._exact_rows(state)
            edges, count, conf_sum, correct_sum = F.adaptive_bin_stats(conf, correct, self.n_bins)
            return edges[:-1], edges[1:], count, conf_sum, correct_sum
        fine_count, fine_conf = state["fine_count"], state["fine_conf_sum"]
        _, _, bins = F.streaming_adaptive_ece(fine_count, fine_conf, self.n_bins)
        n_j = fine_count.sum(1)
        count = torch.bincount(bins, weights=n_j.to(_F64), minlength=self.n_bins).long()
        conf_sum = torch.bincount(bins, weights=fine_conf.sum(1), minlength=self.n_bins)
        correct_sum = torch.bincount(
            bins, weights=fine_count[:, 1].to(_F64), minlength=self.n_bins
        ).long()
        lo_j, hi_j = F.fine_bin_bounds(self.resolution, device=fine_count.device)
        used = n_j > 0
        big = torch.full((self.n_bins,), 2.0, dtype=_F64, device=fine_count.device)
        lower = big.scatter_reduce(0, bins[used], lo_j[used], "amin")
        upper = (-big).scatter_reduce(0, bins[used], hi_j[used], "amax")
        empty = count == 0
        lower = torch.where(empty, torch.zeros_like(lower), lower)
        upper = torch.where(empty, torch.zeros_like(upper), upper)
        return lower, upper, count, conf_sum, correct_sum

    def compute(self) -> Tensor:
        """AECE over every row seen (float64 scalar; NaN when there is none)."""
        if self.mode == "exact":
            conf, correct = self._exact_rows(
                {"confidences": self.confidences, "correct": self.correct}
            )
            _, count, conf_sum, correct_sum = F.adaptive_bin_stats(conf, correct, self.n_bins)
            return F.ece_from_stats(count, conf_sum, correct_sum)
        return F.streaming_adaptive_ece(self.fine_count, self.fine_conf_sum, self.n_bins)[0]

    def error_bound(self) -> Tensor:
        """Guaranteed bound on ``|compute() - exact AECE|`` over all processes (0 when exact)."""
        if self.mode == "exact":
            return torch.zeros((), dtype=_F64)
        s = self._synced_states()
        return F.streaming_adaptive_ece(s["fine_count"], s["fine_conf_sum"], self.n_bins)[1]

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Reliability diagram over the equal-mass bins (bar widths = bin extents).

        With ``val``, torchmetrics' value plot instead. In streaming mode a bin's extent is
        that of its sub-bins. Returns ``(fig, ax)``.
        """
        if val is not None:
            return self._plot(val, ax)
        lower, upper, count, conf_sum, correct_sum = self._bins(self._synced_states())
        value = F.ece_from_stats(count, conf_sum, correct_sum)
        return plot_reliability_diagram(
            lower,
            upper,
            count,
            conf_sum,
            correct_sum,
            ax=ax,
            title=f"AdaptiveECE ({self.mode})",
            value=float(value),
        )
