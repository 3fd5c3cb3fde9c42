"""Class-wise (static) calibration error: every class probability binned, per class."""

from __future__ import annotations

from torch import Tensor

from lightning_calib.metrics.functional._engine import row_pass
from lightning_calib.metrics.functional._validation import _arg_validation, _tensor_validation
from lightning_calib.metrics.functional.binned import ece_from_stats

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
    :func:`~.binned.bin_index`); ``correct_sum`` counts the rows with ``target == c``.
    Computed by :func:`~._engine.row_pass`, which bins only the probabilities above ``1/B``.
    """
    if validate_args:
        _arg_validation(n_bins, ignore_index, from_logits, num_classes)
        _tensor_validation(preds, target, ignore_index, from_logits, num_classes)
    rows = row_pass(preds, target, ignore_index, from_logits=from_logits, classwise_bins=(n_bins,))
    return rows.classwise[n_bins]


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
        >>> import torch
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
