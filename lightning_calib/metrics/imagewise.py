"""Image-wise ECE (per-image pixel ECE, averaged) and the MbLS batch-averaged ECE.

Inputs and conventions: :mod:`lightning_calib.metrics`; the functions:
:mod:`lightning_calib.metrics.functional.imagewise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_calib.metrics import functional as F
from lightning_calib.metrics._base import _ExactMetric

__all__ = ["BatchAveragedECE", "ImagewiseECE"]

_F64 = torch.float64


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
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
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

    def row_pass_needs(self) -> dict[str, Any] | None:  # noqa: D102
        return {}

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Add the ECE of each image of the batch that has a valid pixel.

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it.
        """
        if preds.ndim < 3:
            raise ValueError(
                "image-wise ECE needs dense predictions (N, C, *spatial); got shape "
                f"{tuple(preds.shape)}."
            )
        passed = self._rows(preds, target, rows)
        ece_sum, n_images = F.imagewise_stats_from_pass(passed, self.n_bins)
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
        from_logits: ``preds`` are logits (``True``) or probabilities (``False``: in
            ``[0, 1]``, rows summing to 1 over dim 1 within
            ``2 * max(eps(preds.dtype), eps(float16))``, 1.95e-3 or 1.56e-2 for bfloat16).
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

    def row_pass_needs(self) -> dict[str, Any] | None:  # noqa: D102
        return {}

    def update(self, preds: Tensor, target: Tensor, rows: F.RowPass | None = None) -> None:
        """Add this batch's pixel ECE, weighted by its kept pixels.

        ``rows``: the batch's :class:`~.functional.RowPass` when a metric set built it.
        """
        passed = self._rows(preds, target, rows)
        weighted, n_rows = F.batch_averaged_stats_from_pass(
            passed, self.n_bins, self.exclude_classes
        )
        self._add_to(weighted_sum=weighted, n_rows=n_rows)

    def compute(self) -> Tensor:
        """Pixel-count-weighted mean of the batch ECEs (float64; NaN with no pixel)."""
        return self.weighted_sum / self.n_rows
