"""Per-image pixel ECE (the CALS convention) and the MbLS per-batch pixel ECE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_calib.metrics.functional._engine import _F64, _bincount, _top_label
from lightning_calib.metrics.functional._validation import _arg_validation, _tensor_validation
from lightning_calib.metrics.functional.binned import (
    _binned_top_label,
    bin_index,
    ece_from_stats,
)

__all__ = ["batch_averaged_ece_stats", "imagewise_calibration_error", "imagewise_calibration_stats"]


def imagewise_calibration_stats(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(sum of per-image ECEs, number of images)``; images with no valid pixel are skipped.

    Each image ``n`` of a dense batch ``(N, C, *spatial)`` is binned on its own valid pixels.
    """
    if validate_args:
        _arg_validation(n_bins, ignore_index, from_logits)
        _tensor_validation(preds, target, ignore_index, from_logits)
        if preds.ndim < 3:
            raise ValueError(
                "image-wise ECE needs dense predictions (N, C, *spatial); got shape "
                f"{tuple(preds.shape)}."
            )
    conf, correct, keep = _top_label(preds, target, ignore_index, from_logits)
    n = preds.shape[0]
    p = conf.numel() // max(n, 1)
    size = n * 2 * n_bins
    image = torch.arange(n, device=preds.device).repeat_interleave(p) * (2 * n_bins)
    idx = bin_index(conf, n_bins).mul_(2).add_(correct).add_(image)
    if keep is not None:
        idx.masked_fill_(~keep, size)
    counts = _bincount(idx, size).view(n, n_bins, 2)
    conf_sum = _bincount(idx, size, conf).view(n, n_bins, 2).sum(2)
    count = counts.sum(2)
    has_pixels = count.sum(1) > 0
    ece = ece_from_stats(count[has_pixels], conf_sum[has_pixels], counts[has_pixels][..., 1])
    return ece.sum(), has_pixels.sum()


def imagewise_calibration_error(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Mean over images of the per-image pixel ECE; see :class:`~.ImagewiseECE`."""
    total, count = imagewise_calibration_stats(
        preds,
        target,
        n_bins,
        ignore_index,
        from_logits=from_logits,
        validate_args=validate_args,
    )
    return total / count


def batch_averaged_ece_stats(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    exclude_classes: Sequence[int] = (0,),
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(ECE_batch * M, M)`` for one batch, ``M`` its pixels not void and not excluded.

    The MbLS convention for VOC numbers: the pixel ECE of each batch with void
    (``ignore_index``) and background (``exclude_classes``, by target) dropped, to be averaged
    over batches with weights ``M``. A batch with ``M = 0`` contributes ``(0, 0)``.
    """
    if validate_args:
        _arg_validation(n_bins, ignore_index, from_logits)
        _tensor_validation(preds, target, ignore_index, from_logits)
    conf, correct, keep = _top_label(preds, target, ignore_index, from_logits)
    flat = target.reshape(-1)
    if len(exclude_classes):
        drop = torch.isin(flat, torch.as_tensor(list(exclude_classes), device=flat.device))
        keep = ~drop if keep is None else keep & ~drop
    count, conf_sum, correct_sum = _binned_top_label(conf, correct, keep, n_bins)
    m = count.sum()
    if int(m) == 0:
        return torch.zeros((), dtype=_F64, device=preds.device), m
    return ece_from_stats(count, conf_sum, correct_sum) * m, m
