"""Equal-width bins of the top-label confidence: ECE, MCE, reliability data, temperature grids.

:func:`bin_index` is the one bin formula every binned metric (and the tests) use;
:func:`binned_calibration_stats` gives the per-bin sufficient statistics, also for a grid of
temperatures at once; ``*_from_stats`` turn them into values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_calib.metrics.functional._engine import (
    _F64,
    RowPass,
    _bincount,
    _grid_confidence,
    _top_prepare,
    row_pass,
)
from lightning_calib.metrics.functional._validation import (
    _arg_validation,
    _temperature_list,
    _temperature_raw,
    _tensor_validation,
)

__all__ = [
    "bin_index",
    "binned_calibration_stats",
    "binned_stats_from_pass",
    "ece_for_temperatures",
    "ece_from_stats",
    "expected_calibration_error",
    "maximum_calibration_error",
    "mce_from_stats",
    "reliability_from_stats",
]


def bin_index(conf: Tensor, n_bins: int) -> Tensor:
    """Equal-width bin of each confidence: ``clamp(ceil(conf * n_bins) - 1, 0, n_bins - 1)``.

    Bin ``b`` is ``(b / n_bins, (b + 1) / n_bins]``; 0 falls in the first bin, 1 in the last.
    Computed in float64 (the one rounding is that of ``conf * n_bins``); this is the single
    definition every binned metric and test reference uses.

    Example:
        >>> bin_index(torch.tensor([0.0, 0.25, 0.26, 0.5, 1.0], dtype=torch.float64), 4).tolist()
        [0, 0, 1, 1, 3]
    """
    scaled = conf.to(_F64) * n_bins
    return scaled.ceil_().sub_(1).clamp_(0, n_bins - 1).long()


def _binned_top_label(
    conf: Tensor, correct: Tensor, keep: Tensor | None, n_bins: int, bins: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-bin ``(count, conf_sum, correct_sum)`` of rows, for one or several groups at once.

    ``conf`` is ``(rows,)``, or ``(*groups, rows)`` (the temperatures of a grid, the images of
    a batch) with ``correct`` and ``keep`` broadcast against it; ``bins`` is its
    :func:`bin_index` when already computed. Returns ``(*groups, n_bins)`` tensors; dropped
    rows go to an extra bin that is discarded.
    """
    idx = bin_index(conf, n_bins) if bins is None else bins.clone()
    idx.mul_(2).add_(correct)
    groups = idx.shape[:-1]
    size = math.prod(groups) * 2 * n_bins
    if groups:
        offset = torch.arange(math.prod(groups), device=idx.device) * (2 * n_bins)
        idx.add_(offset.view(*groups, 1))
    if keep is not None:
        idx.masked_fill_(~keep, size)
    counts = _bincount(idx, size).view(*groups, n_bins, 2)
    conf_sum = _bincount(idx, size, conf).view(*groups, n_bins, 2).sum(-1)
    return counts.sum(-1), conf_sum, counts[..., 1].clone()


def binned_stats_from_pass(rows: RowPass, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`binned_calibration_stats` of the batch a :class:`RowPass` was built from.

    Dense batches sum the per-image bins (:meth:`RowPass.image_bins`, shared with the
    image-wise ECE); rows are binned directly.
    """
    if rows.p > 1:
        count, conf_sum, correct_sum = rows.image_bins(n_bins)
        return count.sum(0), conf_sum.sum(0), correct_sum.sum(0)
    return _binned_top_label(rows.conf, rows.correct, rows.keep, n_bins, rows.top_bins(n_bins))


def binned_calibration_stats(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    temperature: float | Sequence[float] | Tensor = 1.0,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-bin ``(count, conf_sum, correct_sum)`` of the top-label confidence.

    The sufficient statistics of ECE, MCE and the reliability diagram. Additive over batches.
    With a 1-D ``temperature`` grid of ``K`` values (post-hoc temperature scaling), the
    statistics of ``softmax(preds / T)`` for every ``T`` at once, shape ``(K, n_bins)``;
    correctness and the per-row maxima do not depend on ``T > 0`` and are computed once; the
    temperatures are applied a group at a time to each chunk of shifted logits (one broadcast
    product and one ``exp`` per group, :func:`~._engine._grid_confidence`), and memory stays
    that of a few chunks.

    Args:
        preds: logits ``(N, C)`` or ``(N, C, *spatial)`` (probabilities if
            ``from_logits=False``), any floating dtype.
        target: integer class indices ``(N,)`` or ``(N, *spatial)``.
        n_bins: number of equal-width bins.
        ignore_index: target value whose rows are dropped.
        temperature: a positive float, or a sequence / 1-D tensor of them.
        from_logits: whether ``preds`` are logits; if not, probabilities in ``[0, 1]`` whose
            rows sum to 1 over dim 1 within ``2 * max(eps(preds.dtype), eps(float16))``
            (1.95e-3; 1.56e-2 for bfloat16).
        validate_args: check the arguments and inputs (shapes, dtypes, finite ``preds``,
            probabilities in ``[0, 1]`` summing to 1 per row, every row, ignored ones
            included; target values in ``[0, C)`` or ``ignore_index``).

    Returns:
        ``count`` (int64), ``conf_sum`` (float64), ``correct_sum`` (int64), each ``(n_bins,)``,
        or ``(K, n_bins)`` for a temperature grid.

    Raises:
        ValueError: invalid arguments or inputs, when ``validate_args``.

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> count, conf_sum, correct = binned_calibration_stats(
        ...     probs, torch.tensor([1, 1, 1, 0]), n_bins=4, from_logits=False)
        >>> count.tolist(), conf_sum.tolist(), correct.tolist()
        ([0, 0, 2, 2], [0.0, 0.0, 1.375, 1.8125], [0, 0, 1, 2])
    """
    temps, grid = _temperature_list(temperature) if validate_args else _temperature_raw(temperature)
    if validate_args:
        _arg_validation(n_bins, ignore_index, from_logits)
        _tensor_validation(preds, target, ignore_index, from_logits)
        if not from_logits and (grid or temps[0] != 1.0):
            raise ValueError("`temperature` scales logits; it needs from_logits=True.")
    if not grid:
        rows = row_pass(preds, target, ignore_index, from_logits=from_logits, temperature=temps[0])
        return binned_stats_from_pass(rows, n_bins)
    z3, zmax, correct, keep = _top_prepare(preds, target, ignore_index)
    k, device = len(temps), z3.device
    count = torch.zeros(k, n_bins, dtype=torch.long, device=device)
    conf_sum = torch.zeros(k, n_bins, dtype=_F64, device=device)
    correct_sum = torch.zeros(k, n_bins, dtype=torch.long, device=device)
    temperatures = torch.tensor(temps, dtype=_F64, device=device)
    # max and correctness are shared by every temperature; the grid is binned group by group
    for sl, conf in _grid_confidence(z3, zmax, from_logits, temperatures):
        count[sl], conf_sum[sl], correct_sum[sl] = _binned_top_label(conf, correct, keep, n_bins)
    return count, conf_sum, correct_sum


def ece_from_stats(count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> Tensor:
    r"""Expected calibration error from per-bin statistics (bins on the last dim).

    .. math::
        \mathrm{ECE} = \sum_b \frac{|B_b|}{N}\,\bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|
        = \frac{1}{N}\sum_b \Bigl|\sum_{i \in B_b} \hat p_i - \sum_{i \in B_b} c_i\Bigr|

    with :math:`N = \sum_b |B_b|`; empty bins contribute nothing. NaN when ``N = 0``.

    Example:
        >>> ece_from_stats(torch.tensor([0, 2, 2]), torch.tensor([0.0, 1.375, 1.8125],
        ...     dtype=torch.float64), torch.tensor([0, 1, 2])).item()
        0.140625
    """
    total = count.to(_F64).sum(-1)
    gaps = (conf_sum.to(_F64) - correct_sum.to(_F64)).abs().sum(-1)
    return gaps / total


def mce_from_stats(count: Tensor, conf_sum: Tensor, correct_sum: Tensor) -> Tensor:
    r"""Maximum calibration error: :math:`\max_{b: |B_b| > 0} |\mathrm{acc}_b - \mathrm{conf}_b|`.

    Bins on the last dim; NaN when every bin is empty.

    Example:
        >>> mce_from_stats(torch.tensor([0, 2, 2]), torch.tensor([0.0, 1.375, 1.8125],
        ...     dtype=torch.float64), torch.tensor([0, 1, 2])).item()
        0.1875
    """
    n = count.to(_F64)
    gap = (conf_sum.to(_F64) - correct_sum.to(_F64)).abs() / n.clamp(min=1)
    gap = torch.where(n > 0, gap, torch.full_like(gap, -1.0))
    out = gap.amax(-1)
    return torch.where(out < 0, torch.full_like(out, float("nan")), out)


def reliability_from_stats(
    count: Tensor, conf_sum: Tensor, correct_sum: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-bin mean confidence and accuracy (float64; NaN for empty bins).

    Example:
        >>> conf, acc = reliability_from_stats(torch.tensor([0, 2]),
        ...     torch.tensor([0.0, 1.375], dtype=torch.float64), torch.tensor([0, 1]))
        >>> conf.tolist()[1], acc.tolist()[1]
        (0.6875, 0.5)
    """
    n = count.to(_F64)
    return conf_sum.to(_F64) / n, correct_sum.to(_F64) / n


def expected_calibration_error(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """ECE of one batch (pooled over every valid row); see :class:`~lightning_calib.metrics.ECE`.

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> expected_calibration_error(probs, torch.tensor([1, 1, 1, 0]), n_bins=4,
        ...     from_logits=False).item()
        0.140625
    """
    stats = binned_calibration_stats(
        preds,
        target,
        n_bins,
        ignore_index,
        from_logits=from_logits,
        validate_args=validate_args,
    )
    return ece_from_stats(*stats)


def maximum_calibration_error(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """MCE of one batch; see :class:`~lightning_calib.metrics.MCE`.

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> maximum_calibration_error(probs, torch.tensor([1, 1, 1, 0]), n_bins=4,
        ...     from_logits=False).item()
        0.1875
    """
    stats = binned_calibration_stats(
        preds,
        target,
        n_bins,
        ignore_index,
        from_logits=from_logits,
        validate_args=validate_args,
    )
    return mce_from_stats(*stats)


def ece_for_temperatures(
    logits: Tensor,
    target: Tensor,
    temperatures: Sequence[float] | Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    validate_args: bool = True,
) -> Tensor:
    """ECE of ``softmax(logits / T)`` for every ``T`` of a grid, shape ``(K,)``, float64.

    For post-hoc temperature scaling over a whole validation set, accumulate
    :func:`binned_calibration_stats` with ``temperature=grid`` over the batches and call
    :func:`ece_from_stats` once; this is the one-batch shortcut.

    Example:
        >>> logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 1.0]])
        >>> ece = ece_for_temperatures(logits, torch.tensor([0, 0, 0, 1]), [1.0, 4.0])
        >>> [round(v, 4) for v in ece.tolist()]
        [0.2964, 0.1448]
    """
    stats = binned_calibration_stats(
        logits,
        target,
        n_bins,
        ignore_index,
        temperature=torch.as_tensor(temperatures, dtype=_F64).reshape(-1),
        validate_args=validate_args,
    )
    return ece_from_stats(*stats)
