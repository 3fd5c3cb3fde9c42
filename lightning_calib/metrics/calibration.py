r"""Calibration metrics as torchmetrics ``Metric`` classes (thin layers over :mod:`.functional`).

Accepted inputs, for every class here (``update(preds, target)``):

* ``preds``: logits (``from_logits=True``, the default) or probabilities in ``[0, 1]``
  (``from_logits=False``), floating point of any precision, shape ``(N, C)`` or
  ``(N, C, *spatial)``;
* ``target``: integer class indices, ``(N,)`` or ``(N, *spatial)``; rows whose target is
  ``ignore_index`` are dropped.

Every valid row (pixel) of everything passed to ``update`` counts once: the value is the
metric of the concatenated data, whatever the batch size or the number of processes
(:class:`BatchAveragedECE` excepted, by design). ``compute()`` before any ``update`` warns
(torchmetrics' own ``UserWarning``) and returns NaN, as it does when every row was ignored:
there is no calibration error of an empty set.

Correctness of a row is :math:`z_{y} = \max_k z_k`: a target tied with the top score counts
as correct. Confidences are float64; bins and counts are float64 / int64.

Methods that read the reduced states besides ``compute`` (``plot``, ``reliability``,
``error_bound``, ``compute_per_class``) gather them across processes as ``compute`` does:
under DDP, call them on every process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from lightning_calib.metrics import functional as F
from lightning_calib.metrics._base import _ExactMetric
from lightning_calib.metrics._plot import plot_reliability_diagram

__all__ = ["ECE", "MCE", "AdaptiveECE", "BatchAveragedECE", "ClasswiseECE", "ImagewiseECE"]

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

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the rows of one batch to the per-bin sums."""
        count, conf_sum, correct_sum = F.binned_calibration_stats(
            preds,
            target,
            self.n_bins,
            self.ignore_index,
            from_logits=self.from_logits,
            validate_args=self.validate_args,
        )
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
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``).
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
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``).
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
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``).
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

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Keep the rows (exact) or add them to the sub-bin sums (streaming)."""
        if self.validate_args:
            F._tensor_validation(preds, target, self.ignore_index, self.from_logits)
        conf, correct, keep = F._top_label(preds, target, self.ignore_index, self.from_logits)
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
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``).
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

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add every class probability of the batch's valid rows to the per-class bins."""
        count, conf_sum, correct_sum = F.classwise_calibration_stats(
            preds,
            target,
            self.num_classes,
            self.n_bins,
            self.ignore_index,
            from_logits=self.from_logits,
            validate_args=self.validate_args,
        )
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


class ImagewiseECE(_ExactMetric):
    r"""Image-wise ECE (the CALS convention): pixel ECE of each image, averaged over images.

    .. math::
        \mathrm{ECE}_{\mathrm{img}} = \frac{1}{|I|}\sum_{n \in I} \mathrm{ECE}(\text{valid
        pixels of image } n)

    with :math:`I` the images having at least one valid pixel (the others are skipped) and
    :math:`\mathrm{ECE}` as in :class:`ECE`. Dense inputs only: ``(N, C, *spatial)``.

    State: the sum of per-image ECEs (float64) and the image count (int64), summed across
    processes: exact under DDP whatever the sharding.

    Args:
        n_bins: number of equal-width bins per image.
        ignore_index: target value whose pixels are dropped.
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> probs = torch.tensor([[0.875, 0.625], [0.125, 0.375]]).view(1, 2, 1, 2)
        >>> metric = ImagewiseECE(n_bins=4, ignore_index=255, from_logits=False)
        >>> metric.update(probs, torch.tensor([[[0, 0]]]))  # both right: ECE 0.25
        >>> metric.update(probs, torch.tensor([[[1, 255]]]))  # one valid pixel, wrong: 0.875
        >>> metric.compute().item()
        0.5625
    """

    ece_sum: Tensor
    n_images: Tensor

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
        self._add_sum_state("ece_sum", (), _F64)
        self._add_sum_state("n_images", (), torch.long)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the ECE of each image of the batch that has a valid pixel."""
        ece_sum, n_images = F.imagewise_calibration_stats(
            preds,
            target,
            self.n_bins,
            self.ignore_index,
            from_logits=self.from_logits,
            validate_args=self.validate_args,
        )
        self._add_to(ece_sum=ece_sum, n_images=n_images)

    def compute(self) -> Tensor:
        """Mean per-image ECE (float64 scalar; NaN with no image)."""
        return self.ece_sum / self.n_images


class BatchAveragedECE(_ExactMetric):
    r"""The MbLS per-batch pixel ECE, for comparison with published VOC numbers only.

    Each ``update`` call (one batch) computes the pixel ECE of that batch with void pixels
    (``ignore_index``) and the ``exclude_classes`` (by target; background, class 0, by
    default) dropped; ``compute`` averages these batch values weighted by their pixel counts:

    .. math::
        \frac{\sum_t M_t\,\mathrm{ECE}(\text{batch } t)}{\sum_t M_t}.

    **Batch-size dependent**: ECE is not additive, so this is neither the dataset-level pixel
    ECE (:class:`ECE`) nor the image-wise one (:class:`ImagewiseECE`); it changes with the
    batch size and the batch composition. Under DDP each process's batches are averaged as
    they were seen (sum states, so the result is that of the same batches in one process).

    Args:
        n_bins: number of equal-width bins.
        ignore_index: void label (pass 255 for VOC).
        exclude_classes: target classes also dropped (MbLS: background, ``(0,)``).
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``).
        validate_args: check every ``update``'s inputs.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> probs = torch.tensor([[0.875, 0.625], [0.125, 0.375]]).view(1, 2, 1, 2)
        >>> metric = BatchAveragedECE(n_bins=4, ignore_index=255, from_logits=False)
        >>> metric.update(probs, torch.tensor([[[0, 1]]]))  # class 0 pixel dropped
        >>> metric.compute().item()
        0.625
    """

    weighted_sum: Tensor
    n_rows: Tensor

    def __init__(
        self,
        n_bins: int = 15,
        ignore_index: int | None = None,
        exclude_classes: Sequence[int] = (0,),
        from_logits: bool = True,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(ignore_index, from_logits, validate_args, n_bins=n_bins, **kwargs)
        exclude_classes = tuple(exclude_classes)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in exclude_classes):
            raise ValueError(f"`exclude_classes` must hold ints; got {exclude_classes!r}.")
        self.n_bins = n_bins
        self.exclude_classes = exclude_classes
        self._add_sum_state("weighted_sum", (), _F64)
        self._add_sum_state("n_rows", (), torch.long)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add this batch's pixel ECE, weighted by its kept pixels."""
        weighted, rows = F.batch_averaged_ece_stats(
            preds,
            target,
            self.n_bins,
            self.ignore_index,
            self.exclude_classes,
            from_logits=self.from_logits,
            validate_args=self.validate_args,
        )
        self._add_to(weighted_sum=weighted, n_rows=rows)

    def compute(self) -> Tensor:
        """Pixel-count-weighted mean of the batch ECEs (float64; NaN with no pixel)."""
        return self.weighted_sum / self.n_rows
