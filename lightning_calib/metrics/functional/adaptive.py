"""Adaptive (equal-mass) ECE: exact equal-mass bins, and the streaming sub-bin grid.

Exact: :func:`adaptive_bin_edges` and :func:`adaptive_bin_stats` over kept confidences.
Streaming: a fixed grid of sub-bins logarithmic in ``1 - conf`` (:func:`fine_bin_index`,
:func:`fine_bin_bounds`, :func:`streaming_fine_stats`), from which
:func:`streaming_adaptive_ece` assembles equal-mass bins with a guaranteed error bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_calib.metrics.functional._engine import _F64, _bincount, confidence_and_correct
from lightning_calib.metrics.functional._validation import _check_int
from lightning_calib.metrics.functional.binned import ece_from_stats

__all__ = [
    "STREAMING_OCTAVES",
    "adaptive_bin_edges",
    "adaptive_bin_stats",
    "adaptive_calibration_error",
    "fine_bin_bounds",
    "fine_bin_index",
    "streaming_adaptive_ece",
    "streaming_fine_stats",
    "streaming_size",
]

#: Number of binary octaves of ``u = 1 - confidence`` covered by the streaming AECE grid:
#: ``[2**-53, 1)``, every positive ``u`` a float64 confidence can have; ``u = 0`` (a confidence
#: of exactly 1) has a sub-bin of its own.
STREAMING_OCTAVES = 53


def adaptive_bin_edges(sorted_conf: Tensor, n_bins: int) -> Tensor:
    """Equal-mass edges ``interp(linspace(0, N, n+1), arange(N), sorted_conf)``, float64.

    The construction of the public code (``numpy.interp`` / ``numpy.linspace``), reproduced
    operation for operation so the edges agree bit for bit: ``x_k = k * (N / n)`` with
    ``x_n = N``, ``e_k = (s[j+1] - s[j]) * (x_k - j) + s[j]`` with ``j = floor(x_k)``, and
    ``e_k = s[N-1]`` for ``x_k >= N - 1``.

    Example:
        >>> s = torch.tensor([0.1, 0.2, 0.4, 0.8], dtype=torch.float64)
        >>> adaptive_bin_edges(s, 2).tolist()
        [0.1, 0.4, 0.8]
    """
    s = sorted_conf.to(_F64)
    n = s.numel()
    if n == 0:
        return torch.zeros(n_bins + 1, dtype=_F64, device=s.device)
    x = torch.arange(n_bins + 1, dtype=_F64, device=s.device) * (n / n_bins)
    x[-1] = n
    j = x.floor().long().clamp_(0, n - 1)
    j1 = (j + 1).clamp_(max=n - 1)
    edges = (s[j1] - s[j]) * (x - j.to(_F64)) + s[j]
    return torch.where(x >= n - 1, s[n - 1].expand_as(edges), edges)


def adaptive_bin_stats(
    conf: Tensor, correct: Tensor, n_bins: int = 15
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Equal-mass bins of the rows: ``(edges, count, conf_sum, correct_sum)``.

    Bin ``b`` is ``(e_b, e_{b+1}]``, the first one also closed at ``e_0`` (the minimum
    confidence; the public code drops that row, which is the fix of docs/REFERENCE.md). Rows equal
    to an edge fall in the lower bin, so equal confidences always share a bin.
    """
    conf = conf.to(_F64).reshape(-1)
    correct = correct.reshape(-1)
    edges = adaptive_bin_edges(conf.sort().values, n_bins)
    if conf.numel() == 0:
        zeros = torch.zeros(n_bins, dtype=torch.long, device=conf.device)
        return edges, zeros, zeros.to(_F64), zeros.clone()
    b = (torch.searchsorted(edges, conf) - 1).clamp_(0, n_bins - 1)
    count = torch.bincount(b, minlength=n_bins)
    conf_sum = torch.bincount(b, weights=conf, minlength=n_bins)
    correct_sum = torch.bincount(b[correct.bool()], minlength=n_bins)
    return edges, count, conf_sum, correct_sum


def adaptive_calibration_error(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    r"""Adaptive (equal-mass) ECE of one batch, exact; see :class:`~.AdaptiveECE`.

    .. math::
        \mathrm{AECE} = \frac{1}{N}\sum_{b} \Bigl|\sum_{i \in B_b} (\hat p_i - c_i)\Bigr|,
        \quad B_b = \{i : e_b < \hat p_i \le e_{b+1}\}\ (\hat p_i = e_0 \text{ also in } B_0)

    Example:
        >>> probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
        >>> adaptive_calibration_error(probs, torch.tensor([1, 1, 1, 0]), n_bins=2,
        ...     from_logits=False).item()
        0.078125
    """
    conf, correct = confidence_and_correct(
        preds, target, ignore_index, from_logits=from_logits, validate_args=validate_args
    )
    if validate_args:
        _check_int("n_bins", n_bins, 1)
    _, count, conf_sum, correct_sum = adaptive_bin_stats(conf, correct, n_bins)
    return ece_from_stats(count, conf_sum, correct_sum)


def streaming_size(resolution: int) -> int:
    """Number of streaming sub-bins: ``STREAMING_OCTAVES * resolution``, plus one for 1.0."""
    return STREAMING_OCTAVES * resolution + 1


def fine_bin_index(conf: Tensor, resolution: int) -> Tensor:
    """Streaming-AECE sub-bin of each confidence, increasing with the confidence.

    The grid is logarithmic in ``u = 1 - conf``: each binary octave ``[2**-(k+1), 2**-k)`` of
    ``u``, ``k = 0 .. 52``, is split into ``resolution`` (a power of two) equal sub-bins, read
    straight from the float64 bits of ``u`` (exponent and top mantissa bits); ``u = 1`` joins
    the first sub-bin. Sub-bins are therefore ``1 / resolution`` of ``1 - conf`` wide in
    relative terms, fine near a confidence of 1 where segmentation pixels pile up, and
    ``1 / (2 resolution)`` wide in absolute terms for ``conf <= 1/2``. A confidence of exactly
    1 (saturated logits) gets the last sub-bin, ``STREAMING_OCTAVES * resolution``, to itself.
    The map is monotone: equal confidences share a sub-bin.

    Example:
        >>> conf = torch.tensor([0.0, 0.5, 0.75, 1.0 - 2**-53, 1.0], dtype=torch.float64)
        >>> fine_bin_index(conf, 4).tolist()
        [0, 3, 7, 211, 212]
    """
    shift = 52 - (resolution.bit_length() - 1)
    top = STREAMING_OCTAVES * resolution
    u = 1.0 - conf.to(_F64)
    bits = (u.contiguous().view(torch.int64) >> shift) - ((1023 - STREAMING_OCTAVES) * resolution)
    idx = (top - 1) - bits.clamp_(0, top - 1)
    return idx.masked_fill_(u == 0.0, top)


def fine_bin_bounds(resolution: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Confidence interval ``(lower, upper]`` of every streaming sub-bin, float64.

    Up to the rounding of ``1 - conf``, sub-bin ``j`` holds the confidences in
    ``(lower[j], upper[j]]``; sub-bin 0 also holds 0, and the last one is ``[1, 1]``.
    """
    shift = 52 - (resolution.bit_length() - 1)
    top = STREAMING_OCTAVES * resolution
    f = torch.arange(top, dtype=torch.long, device=device)
    base = (1023 - STREAMING_OCTAVES) * resolution
    u_lo = ((f + base) << shift).view(_F64)  # u-order sub-bin f covers [u_lo, u_hi)
    u_hi = ((f + 1 + base) << shift).view(_F64)
    one = torch.ones(1, dtype=_F64, device=device)
    lower = torch.cat([(1.0 - u_hi).flip(0), one])  # confidence order: index top - 1 - f
    upper = torch.cat([(1.0 - u_lo).flip(0), one])
    lower[0] = 0.0
    return lower, upper


def streaming_fine_stats(
    conf: Tensor, correct: Tensor, keep: Tensor | None, resolution: int
) -> tuple[Tensor, Tensor]:
    """Sub-bin statistics ``(count, conf_sum)``, each ``(streaming_size(resolution), 2)``.

    Column 0 holds the wrong rows, column 1 the correct ones (``count`` int64, ``conf_sum``
    float64). Additive over batches; rows with ``keep == False`` are dropped.
    """
    size = streaming_size(resolution)
    idx = fine_bin_index(conf, resolution).mul_(2).add_(correct)
    if keep is not None:
        idx.masked_fill_(~keep, 2 * size)
    count = _bincount(idx, 2 * size).view(size, 2)
    conf_sum = _bincount(idx, 2 * size, conf.to(_F64)).view(size, 2)
    return count, conf_sum


def streaming_adaptive_ece(
    fine_count: Tensor, fine_conf_sum: Tensor, n_bins: int = 15
) -> tuple[Tensor, Tensor, Tensor]:
    r"""AECE from sub-bin statistics, with a guaranteed error bound.

    Sub-bins are taken in increasing confidence; sub-bin ``j`` holds the rows of sorted ranks
    ``C_{j-1} .. C_j - 1`` (``C`` the cumulative counts; equal confidences share a sub-bin).
    The exact equal-mass edge ``e_b`` is interpolated between the rows of ranks
    ``floor(x_b)`` and ``ceil(x_b)``, ``x_b = b N / n``. If ``x_b <= C_{j-1} - 1`` every row of
    ``j`` lies above ``e_b``; if ``x_b >= C_j - 1``, every row lies at or below it. So a
    sub-bin with no interior ``x_b`` in the open interval ``(C_{j-1} - 1, C_j - 1)`` lies
    entirely inside one exact bin, bin ``#{b : x_b < m_j}`` with ``m_j`` its middle rank, and
    is assigned there: exactly. These open intervals are disjoint, so at most one sub-bin per
    interior edge, at most ``n - 1`` in all, *straddles*; it is assigned by the same rule and
    may hold rows of two exact bins. The last sub-bin holds only confidences of exactly 1, all
    in the exact bin ``#{b : x_b < C_{j-1}}``: it never straddles. Moving a row *i* between
    two bins changes the two bin sums by :math:`\hat p_i - c_i` each, so

    .. math::
        |\mathrm{AECE}_{\text{streaming}} - \mathrm{AECE}_{\text{exact}}|
        \le \frac{2}{N}\sum_{j\ \text{straddling}}\ \sum_{i \in j} |\hat p_i - c_i|
        \le \frac{2(n-1)}{N}\,\max_j \sum_{i\in j} |\hat p_i - c_i|

    (up to the floating-point rounding of the edge interpolation itself), and
    :math:`\sum_{i\in j} |\hat p_i - c_i|` = (correct rows - their confidence sum) +
    (wrong rows' confidence sum) is known exactly from the statistics, so the first bound is
    returned with the value. Near a confidence of 1 the correct rows add only ``1 - conf``
    each, which keeps the bound small where segmentation pixels concentrate.

    Returns:
        ``(aece, bound, bin_of_sub_bin)`` (float64, float64, int64 ``(size,)``); NaN value and
        bound when there are no rows.
    """
    n_j = fine_count.sum(1)
    cor_j = fine_count[:, 1].to(_F64)
    conf_j = fine_conf_sum.sum(1)
    w_j = (cor_j - fine_conf_sum[:, 1]) + fine_conf_sum[:, 0]
    total = int(n_j.sum())
    c_hi = n_j.cumsum(0).to(_F64)
    c_lo = c_hi - n_j.to(_F64)
    if total == 0:
        nan = torch.tensor(float("nan"), dtype=_F64, device=fine_count.device)
        return nan, nan.clone(), torch.zeros_like(n_j)
    x = torch.arange(1, n_bins, dtype=_F64, device=fine_count.device) * (total / n_bins)
    mid = (c_lo + c_hi - 1.0) / 2.0
    bins = torch.searchsorted(x, mid)  # #{b : x_b < m_j}
    # straddling: some x_b in (C_{j-1} - 1, C_j - 1)
    straddling = torch.searchsorted(x, c_hi - 1.0) > torch.searchsorted(x, c_lo - 1.0, right=True)
    straddling &= n_j > 0
    # the last sub-bin is a single value, 1.0: above e_b iff x_b < C_{j-1}
    bins[-1] = torch.searchsorted(x, c_lo[-1:])[0]
    straddling[-1] = False
    sums = torch.bincount(bins, weights=conf_j - cor_j, minlength=n_bins)
    value = sums.abs().sum() / total
    bound = 2.0 * w_j[straddling].sum() / total
    return value, bound, bins
