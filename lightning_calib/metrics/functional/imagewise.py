"""Per-image pixel ECE (the CALS convention) and the MbLS per-batch pixel ECE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_calib.metrics.functional._engine import _F64, RowPass, row_pass
from lightning_calib.metrics.functional._validation import _arg_validation, _tensor_validation
from lightning_calib.metrics.functional.binned import _binned_top_label, ece_from_stats

__all__ = [
    "batch_averaged_ece_stats",
    "batch_averaged_stats_from_pass",
    "imagewise_calibration_error",
    "imagewise_calibration_stats",
    "imagewise_stats_from_pass",
]


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
    return imagewise_stats_from_pass(
        row_pass(preds, target, ignore_index, from_logits=from_logits), n_bins
    )


def imagewise_stats_from_pass(rows: RowPass, n_bins: int) -> tuple[Tensor, Tensor]:
    """:func:`imagewise_calibration_stats` of the batch a :class:`RowPass` was built from."""
    count, conf_sum, correct_sum = rows.image_bins(n_bins)
    has_pixels = count.sum(1) > 0
    ece = ece_from_stats(count[has_pixels], conf_sum[has_pixels], correct_sum[has_pixels])
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
    rows = row_pass(preds, target, ignore_index, from_logits=from_logits)
    return batch_averaged_stats_from_pass(rows, n_bins, exclude_classes)


def batch_averaged_stats_from_pass(
    rows: RowPass, n_bins: int, exclude_classes: Sequence[int] = (0,)
) -> tuple[Tensor, Tensor]:
    """:func:`batch_averaged_ece_stats` of the batch a :class:`RowPass` was built from."""
    keep = rows.keep
    if len(exclude_classes):
        excluded = torch.as_tensor(list(exclude_classes), device=rows.target.device)
        drop = torch.isin(rows.target, excluded)  # ignored rows hold 0 here: keep drops them
        keep = ~drop if keep is None else keep & ~drop
    bins = rows.top_bins(n_bins)
    count, conf_sum, correct_sum = _binned_top_label(rows.conf, rows.correct, keep, n_bins, bins)
    m = count.sum()
    if int(m) == 0:
        return torch.zeros((), dtype=_F64, device=rows.conf.device), m
    return ece_from_stats(count, conf_sum, correct_sum) * m, m
