r"""Functional core of the calibration metrics: sufficient statistics, and values from them.

Every metric of :mod:`lightning_calib.metrics` is two layers, as in torchmetrics:

* ``*_stats`` functions turn one batch ``(preds, target)`` into **sufficient statistics**
  (per-bin counts, confidence sums, correct counts, or plain sums). They are additive: the
  statistics of a concatenation are the sum of the statistics of the parts, which is what makes
  the metric classes exact over several batches and under DDP (``dist_reduce_fx="sum"``).
* ``*_from_stats`` / ``*_compute`` functions turn accumulated statistics into the number.

One-shot functions (:func:`expected_calibration_error`, ...) chain the two for a single batch.

Conventions shared by every function here (see ``docs/REFERENCE.md``, "Calibration metrics"):

* ``preds`` are logits by default (``from_logits=True``); ``from_logits=False`` takes
  probabilities in ``[0, 1]``. Shapes ``(N, C)`` with ``target`` ``(N,)``, or dense
  ``(N, C, *spatial)`` with ``target`` ``(N, *spatial)``; every valid pixel is one row.
  Validation and ``ignore_index`` masking come from :mod:`lightning_calib.rows`.
* Confidence is the top softmax probability, computed fused from the logits in float64:
  :math:`\hat p_i = \exp(\max_k z_{ik}) / \sum_k \exp(z_{ik})` (or
  :math:`1 / \sum_k \exp(z_{ik} - \max_k z_{ik})` when a top logit lies outside
  ``[-600, 700]``). It equals the float64 softmax maximum to a few ulps, and needs no
  ``softmax`` + ``max``-with-indices pass.
* **Ties**: row *i* is correct when :math:`z_{i,y_i} = \max_k z_{ik}`, i.e. a target tied with
  the maximum counts as correct (``argmax`` would only credit the first tied class). Ties have
  probability zero for real-valued logits; they occur with saturated low-precision logits.
  :func:`topk_accuracy_stats` follows the same rule (a row is a top-*k* hit when fewer than
  *k* logits are strictly greater than the target's).
* **Equal-width bins**: bin :math:`b \in \{0, \dots, B-1\}` is :math:`(b/B, (b+1)/B]`, a
  confidence of exactly 0 in the first bin and of exactly 1 in the last one. The index is
  computed once, in float64, by :func:`bin_index`: ``clamp(ceil(conf * B) - 1, 0, B - 1)``.
* Accumulators are float64 (confidence sums) and int64 (counts): no saturation at 2**24 rows.

Dense inputs are reduced over the class dimension in their own ``(N, C, *spatial)`` layout,
in chunks of about ``2**20`` elements on CPU: moving the class dimension last first
(:func:`lightning_calib.rows.flatten`) would copy every logit, and on CPU large fresh float64
buffers cost more in page faults than the arithmetic. The per-pixel results are then flattened
in ``(N, *spatial)`` order, the order :func:`lightning_calib.rows.flatten` gives the rows, and
masked with :func:`lightning_calib.rows.valid_mask`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lightning_calib.rows import check_inputs, safe_target, valid_mask

__all__ = [
    "STREAMING_OCTAVES",
    "adaptive_bin_edges",
    "adaptive_bin_stats",
    "adaptive_calibration_error",
    "batch_averaged_ece_stats",
    "bin_index",
    "binned_calibration_stats",
    "brier_score",
    "brier_score_stats",
    "classwise_calibration_error",
    "classwise_calibration_stats",
    "classwise_ece_from_stats",
    "confidence_and_correct",
    "ece_for_temperatures",
    "ece_from_stats",
    "expected_calibration_error",
    "fine_bin_bounds",
    "fine_bin_index",
    "imagewise_calibration_error",
    "imagewise_calibration_stats",
    "maximum_calibration_error",
    "mce_from_stats",
    "negative_log_likelihood",
    "nll_stats",
    "reliability_from_stats",
    "streaming_adaptive_ece",
    "streaming_fine_stats",
    "streaming_size",
    "topk_accuracy",
    "topk_accuracy_stats",
]

#: Number of binary octaves of ``u = 1 - confidence`` covered by the streaming AECE grid:
#: ``[2**-53, 1)``, every positive ``u`` a float64 confidence can have; ``u = 0`` (a confidence
#: of exactly 1) has a sub-bin of its own.
STREAMING_OCTAVES = 53

_F64 = torch.float64


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool; got {value!r}.")


def _check_ignore_index(ignore_index: object) -> None:
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise ValueError(f"`ignore_index` must be an int or None; got {ignore_index!r}.")


def _arg_validation(
    n_bins: int | None = None,
    ignore_index: int | None = None,
    from_logits: bool = True,
    num_classes: int | None = None,
) -> None:
    """Validate the arguments shared by every metric; raise ``ValueError`` naming the culprit."""
    if n_bins is not None:
        _check_int("n_bins", n_bins, 1)
    if num_classes is not None:
        _check_int("num_classes", num_classes, 1)
    _check_ignore_index(ignore_index)
    _check_bool("from_logits", from_logits)


def _tensor_validation(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None,
    from_logits: bool,
    num_classes: int | None = None,
) -> None:
    """Shapes, dtypes, class count and target range (:func:`rows.check_inputs`), then values.

    Raises:
        ValueError: anything :func:`lightning_calib.rows.check_inputs` rejects; non-finite
            ``preds``; probabilities (``from_logits=False``) outside ``[0, 1]``.
    """
    check_inputs(preds, target, ignore_index, num_classes=num_classes)
    if preds.shape[1] == 0:
        raise ValueError(
            f"`preds` must have at least one class in dim 1; got {tuple(preds.shape)}."
        )
    if preds.numel() == 0:
        return
    lo, hi = torch.aminmax(preds.detach())  # one pass; NaN propagates to both
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan = int(torch.isnan(preds.detach()).sum())
        n_inf = int(torch.isinf(preds.detach()).sum())
        raise ValueError(
            f"`preds` must be finite; expected 0 non-finite values, got {n_nan} NaN and "
            f"{n_inf} infinite out of {preds.numel()}."
        )
    if not from_logits and (lo < 0.0 or hi > 1.0):
        raise ValueError(
            "`preds` must be probabilities in [0, 1] when from_logits=False; got values in "
            f"[{lo:.6g}, {hi:.6g}]. Pass logits with from_logits=True."
        )


def _temperature_list(temperature: float | Sequence[float] | Tensor) -> tuple[list[float], bool]:
    """Return ``(values, is_grid)``; raise ``ValueError`` unless every value is finite > 0."""
    if isinstance(temperature, Tensor):
        if temperature.ndim > 1:
            raise ValueError(
                f"`temperature` must be a scalar or 1-D; got shape {tuple(temperature.shape)}."
            )
        grid = temperature.ndim == 1
        values = [float(t) for t in temperature.reshape(-1).tolist()]
    elif isinstance(temperature, Sequence):
        grid, values = True, [float(t) for t in temperature]
    else:
        grid, values = False, [float(temperature)]
    if not values or not all(0.0 < t < float("inf") for t in values):
        raise ValueError(f"`temperature` values must be finite and > 0; got {values}.")
    return values, grid


# --------------------------------------------------------------------------------------------
# the per-row engine
# --------------------------------------------------------------------------------------------


def _chunk_elements(device: torch.device) -> int:
    # CPU: an 8 MiB float64 work buffer. Under glibc's 32 MiB dynamic mmap threshold, malloc
    # recycles it from batch to batch, while fresh larger buffers page-fault on every batch
    # (which costs more than the arithmetic); and few chunks mean few parallel regions, which
    # matters when other processes hold cores. GPU: no such costs, take big chunks.
    return 1 << 20 if device.type == "cpu" else 1 << 24


def _chunks(n: int, c: int, p: int, budget: int) -> Iterator[tuple[slice, slice]]:
    """Slices ``(images, pixels)`` of a ``(n, c, p)`` tensor holding about ``budget`` elements."""
    if c * p <= budget:
        step = max(1, budget // max(1, c * p))
        for i in range(0, n, step):
            yield slice(i, min(i + step, n)), slice(0, p)
    else:
        step = max(1, budget // c)
        for i in range(n):
            for a in range(0, p, step):
                yield slice(i, i + 1), slice(a, min(a + step, p))


def _as_3d(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """View ``(N, C, *spatial)``, ``(N, *spatial)`` as ``(N, C, P)``, ``(N, P)`` (P = 1: rows)."""
    n, c = preds.shape[0], preds.shape[1]
    p = math.prod(preds.shape[2:])
    return preds.detach().reshape(n, c, p), target.reshape(n, p)


def _shifted_logits(zc: Tensor, zmax64: Tensor, buf: Tensor, temperature: float) -> Tensor:
    """``(z - max z) / T`` of one chunk in float64, written into (a view of) ``buf``."""
    d = buf[: zc.numel()].view(zc.shape)
    d.copy_(zc)  # exact float64 copy; the difference below is then exact for float32 inputs
    d.sub_(zmax64)
    if temperature != 1.0:
        d.div_(temperature)
    return d


def _top_prepare(
    preds: Tensor, target: Tensor, ignore_index: int | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(z3, zmax, correct, keep)``: the ``(N, C, P)`` view, per-row max, correctness, mask.

    Correctness does not depend on a temperature ``T > 0`` (the arg-max is unchanged).
    """
    z3, t2 = _as_3d(preds, target)
    n, _, p = z3.shape
    keep = valid_mask(t2.reshape(-1), ignore_index)
    if n * p == 0:
        return z3, z3.new_zeros((n, 1, p)), torch.zeros(0, dtype=torch.bool), keep
    safe = safe_target(t2, keep)
    zmax = z3.amax(1, keepdim=True)
    correct = (z3.gather(1, safe.unsqueeze(1)) == zmax).reshape(-1)
    return z3, zmax, correct, keep


def _top_confidence(z3: Tensor, zmax: Tensor, from_logits: bool, temperature: float) -> Tensor:
    """Per-row top softmax probability of ``z / T`` in float64, flat in ``(N, P)`` order."""
    n, c, p = z3.shape
    if n * p == 0:
        return torch.zeros(0, dtype=_F64, device=z3.device)
    if not from_logits:
        return zmax.to(_F64).reshape(-1)
    zmax64 = zmax.to(_F64)
    top = zmax64 if temperature == 1.0 else zmax64 / temperature
    lo, hi = (float(v) for v in torch.aminmax(top))
    # With every row's top (scaled) logit in [-600, 700], exp(z / T) neither overflows nor
    # loses anything that matters (terms below e**-708 are < 1e-46 of the row's sum), so
    # conf = exp(max z / T) / sum_k exp(z_k / T) needs no subtraction pass. Otherwise shift.
    direct = -600.0 <= lo and hi <= 700.0
    sums = torch.empty((n, p), dtype=_F64, device=z3.device)
    budget = _chunk_elements(z3.device)
    buf = torch.empty(min(budget, z3.numel()), dtype=_F64, device=z3.device)
    for rs, ps in _chunks(n, c, p, budget):
        zc = z3[rs, :, ps]
        d = buf[: zc.numel()].view(zc.shape).copy_(zc)  # exact float64 copy
        if not direct:
            d.sub_(zmax64[rs, :, ps])
        if temperature != 1.0:
            d.div_(temperature)
        torch.sum(d.exp_(), dim=1, out=sums[rs, ps])
    if direct:
        return top.view(n, p).exp().div_(sums).reshape(-1)
    return sums.reciprocal_().reshape(-1)


def _top_label(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None,
    from_logits: bool,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-row top-label confidence (float64), correctness (bool) and keep mask (or None).

    Rows come in ``(N, *spatial)`` order, ignored rows included (their values are garbage).
    """
    z3, zmax, correct, keep = _top_prepare(preds, target, ignore_index)
    return _top_confidence(z3, zmax, from_logits, temperature), correct, keep


def confidence_and_correct(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    temperature: float = 1.0,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    """Top-label confidence (float64) and correctness (bool) of every valid row.

    Args:
        preds: logits (or probabilities with ``from_logits=False``), ``(N, C)`` or
            ``(N, C, *spatial)``, any floating dtype.
        target: class indices, ``(N,)`` or ``(N, *spatial)``.
        ignore_index: target value whose rows are dropped.
        temperature: divide the logits by this before the softmax (logits only).
        from_logits: whether ``preds`` are logits.
        validate_args: check shapes, dtypes, values (see :func:`binned_calibration_stats`).

    Returns:
        ``(conf, correct)``, both of shape ``(M,)`` with ``M`` the number of valid rows, in
        ``(N, *spatial)`` order.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
        >>> conf, correct = confidence_and_correct(logits, torch.tensor([1, 0]))
        >>> [round(v, 6) for v in conf.tolist()], correct.tolist()  # row 0: a tie, correct
        ([0.333333, 0.786986], [True, True])
    """
    if validate_args:
        _arg_validation(None, ignore_index, from_logits)
        _tensor_validation(preds, target, ignore_index, from_logits)
        _check_temperature_use(temperature, from_logits)
    conf, correct, keep = _top_label(preds, target, ignore_index, from_logits, temperature)
    if keep is None:
        return conf, correct
    return conf[keep], correct[keep]


def _check_temperature_use(temperature: float, from_logits: bool) -> None:
    _temperature_list(temperature)
    if not from_logits and float(temperature) != 1.0:
        raise ValueError("`temperature` scales logits; it needs from_logits=True.")


# --------------------------------------------------------------------------------------------
# equal-width binning: ECE, MCE, reliability diagrams, temperature grids
# --------------------------------------------------------------------------------------------


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


def _bincount(idx: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
    """``bincount`` of ``idx`` in ``[0, size]``, the extra last bin (ignored rows) dropped."""
    out = torch.bincount(idx, weights=weights, minlength=size + 1)[:size]
    if weights is not None and out.dtype != weights.dtype:  # empty input: int64 zeros
        out = out.to(weights.dtype)
    return out


def _binned_top_label(
    conf: Tensor, correct: Tensor, keep: Tensor | None, n_bins: int
) -> tuple[Tensor, Tensor, Tensor]:
    idx = bin_index(conf, n_bins).mul_(2).add_(correct)
    if keep is not None:
        idx.masked_fill_(~keep, 2 * n_bins)  # ignored rows go to a dropped extra bin
    counts = _bincount(idx, 2 * n_bins).view(n_bins, 2)
    conf_sum = _bincount(idx, 2 * n_bins, conf).view(n_bins, 2).sum(1)
    return counts.sum(1), conf_sum, counts[:, 1].clone()


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
    correctness and the per-row maxima do not depend on ``T > 0`` and are computed once; each
    temperature costs one float64 pass over the logits, and memory stays that of one.

    Args:
        preds: logits ``(N, C)`` or ``(N, C, *spatial)`` (probabilities if
            ``from_logits=False``), any floating dtype.
        target: integer class indices ``(N,)`` or ``(N, *spatial)``.
        n_bins: number of equal-width bins.
        ignore_index: target value whose rows are dropped.
        temperature: a positive float, or a sequence / 1-D tensor of them.
        from_logits: whether ``preds`` are logits.
        validate_args: check the arguments and inputs (shapes, dtypes, finite ``preds``,
            probabilities in ``[0, 1]``, target values in ``[0, C)`` or ``ignore_index``).

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
    z3, zmax, correct, keep = _top_prepare(preds, target, ignore_index)
    stats = []
    for t in temps:  # one float64 pass per temperature; max and correctness are shared
        conf = _top_confidence(z3, zmax, from_logits, t)
        stats.append(_binned_top_label(conf, correct, keep, n_bins))
    if not grid:
        return stats[0]
    count, conf_sum, correct_sum = (torch.stack(s) for s in zip(*stats))
    return count, conf_sum, correct_sum


def _temperature_raw(temperature: float | Sequence[float] | Tensor) -> tuple[list[float], bool]:
    if isinstance(temperature, Tensor):
        return [float(t) for t in temperature.reshape(-1).tolist()], temperature.ndim == 1
    if isinstance(temperature, Sequence):
        return [float(t) for t in temperature], True
    return [float(temperature)], False


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


# --------------------------------------------------------------------------------------------
# adaptive (equal-mass) bins: exact and streaming
# --------------------------------------------------------------------------------------------


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
    confidence; the public code drops that row, which is the fix of REFERENCE.md). Rows equal
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


# --------------------------------------------------------------------------------------------
# class-wise (static) calibration error
# --------------------------------------------------------------------------------------------


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
    :func:`bin_index`); ``correct_sum`` counts the rows with ``target == c``.
    """
    if validate_args:
        _arg_validation(n_bins, ignore_index, from_logits, num_classes)
        _tensor_validation(preds, target, ignore_index, from_logits, num_classes)
    z3, t2 = _as_3d(preds, target)
    n, c, p = z3.shape
    keep = valid_mask(t2.reshape(-1), ignore_index)
    keep2 = None if keep is None else keep.view(n, p)
    size = c * n_bins * 2
    device = preds.device
    counts = torch.zeros(size, dtype=torch.long, device=device)
    conf_sums = torch.zeros(size, dtype=_F64, device=device)
    budget = _chunk_elements(device)
    buf = torch.empty(min(budget, max(1, z3.numel())), dtype=_F64, device=device)
    offset = (torch.arange(c, device=device) * (2 * n_bins)).view(1, c, 1)
    classes = torch.arange(c, device=device).view(1, c, 1)
    for rs, ps in _chunks(n, c, p, budget):
        zc = z3[rs, :, ps]
        if from_logits:
            e = _shifted_logits(zc, zc.amax(1, keepdim=True).to(_F64), buf, 1.0).exp_()
            probs = e.div_(e.sum(1, keepdim=True))
        else:
            probs = buf[: zc.numel()].view(zc.shape).copy_(zc)
        hit = t2[rs, ps].unsqueeze(1) == classes
        idx = bin_index(probs, n_bins).mul_(2).add_(hit).add_(offset)
        if keep2 is not None:
            idx.masked_fill_(~keep2[rs, ps].unsqueeze(1), size)
        counts += _bincount(idx.reshape(-1), size)
        conf_sums += _bincount(idx.reshape(-1), size, probs.reshape(-1))
    counts = counts.view(c, n_bins, 2)
    return counts.sum(2), conf_sums.view(c, n_bins, 2).sum(2), counts[..., 1].clone()


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


# --------------------------------------------------------------------------------------------
# image-wise ECE and the MbLS per-batch convention
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# NLL, Brier score, top-k accuracy: exact sums
# --------------------------------------------------------------------------------------------


def _row_reduce(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None,
    kernel: str,
    from_logits: bool = True,
    k: int = 1,
) -> tuple[Tensor, Tensor]:
    """Sum over valid rows of a per-row quantity, and the row count.

    ``kernel``: ``"nll"`` (``-log p_y``), ``"brier"`` (``sum_k (p_k - 1[k = y])**2``) or
    ``"topk"`` (1 when fewer than ``k`` classes score strictly above the target).
    """
    z3, t2 = _as_3d(preds, target)
    n, c, p = z3.shape
    keep = valid_mask(t2.reshape(-1), ignore_index)
    safe = safe_target(t2, keep).unsqueeze(1)
    device = preds.device
    out_dtype = torch.long if kernel == "topk" else _F64
    values = torch.empty((n, p), dtype=out_dtype, device=device)
    budget = _chunk_elements(device)
    buf = torch.empty(min(budget, max(1, z3.numel())), dtype=_F64, device=device)
    for rs, ps in _chunks(n, c, p, budget):
        zc, tc, out = z3[rs, :, ps], safe[rs, :, ps], values[rs, ps]
        if kernel == "topk":
            torch.sum(zc > zc.gather(1, tc), dim=1, out=out)
            continue
        if from_logits:
            d = _shifted_logits(zc, zc.amax(1, keepdim=True).to(_F64), buf, 1.0)
            d_y = d.gather(1, tc).squeeze(1)  # z_y - max z, exact
            s = d.exp_().sum(1)
            if kernel == "nll":
                out.copy_(s.log_().sub_(d_y))
            else:
                sq = d.square_().sum(1)
                out.copy_(sq.div_(s.square()).sub_(d_y.exp_().div_(s).mul_(2)).add_(1.0))
        else:
            probs = buf[: zc.numel()].view(zc.shape).copy_(zc)
            p_y = probs.gather(1, tc).squeeze(1)
            if kernel == "nll":
                out.copy_(p_y.log_().neg_())
            else:
                out.copy_(probs.square_().sum(1).sub_(p_y.mul_(2)).add_(1.0))
    flat = values.reshape(-1)
    if kernel == "topk":
        flat = flat < k
        if keep is not None:
            flat = flat[keep]
        return flat.sum(), torch.tensor(flat.numel(), device=device)
    if keep is not None:
        flat = flat[keep]
    return flat.sum(), torch.tensor(flat.numel(), device=device)


def nll_stats(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""``(sum of -log p_{i,y_i}, rows)`` over valid rows, float64 / int64.

    From logits, :math:`-\log p_{iy} = \log\sum_k e^{z_{ik} - \max z_i} - (z_{iy} - \max z_i)`
    in float64; from probabilities, :math:`-\log p_{iy}` (``inf`` when :math:`p_{iy} = 0`).
    """
    if validate_args:
        _arg_validation(None, ignore_index, from_logits)
        _tensor_validation(preds, target, ignore_index, from_logits)
    return _row_reduce(preds, target, ignore_index, "nll", from_logits)


def negative_log_likelihood(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Mean NLL (cross-entropy) over valid rows; see :class:`~lightning_calib.metrics.NLL`.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> round(negative_log_likelihood(logits, torch.tensor([0, 1])).item(), 6)
        0.693147
    """
    total, count = nll_stats(
        preds, target, ignore_index, from_logits=from_logits, validate_args=validate_args
    )
    return total / count


def brier_score_stats(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""``(sum of \sum_k (p_{ik} - 1[k = y_i])^2, rows)`` over valid rows, float64 / int64."""
    if validate_args:
        _arg_validation(None, ignore_index, from_logits, num_classes)
        _tensor_validation(preds, target, ignore_index, from_logits, num_classes)
    return _row_reduce(preds, target, ignore_index, "brier", from_logits)


def brier_score(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Mean multiclass Brier score; see :class:`~lightning_calib.metrics.BrierScore`.

    Example:
        >>> probs = torch.tensor([[0.5, 0.5], [0.75, 0.25]])
        >>> brier_score(probs, torch.tensor([0, 1]), from_logits=False).item()
        0.8125
    """
    total, count = brier_score_stats(
        preds,
        target,
        ignore_index,
        num_classes=num_classes,
        from_logits=from_logits,
        validate_args=validate_args,
    )
    return total / count


def topk_accuracy_stats(
    preds: Tensor,
    target: Tensor,
    k: int = 1,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(top-k hits, rows)`` over valid rows, int64.

    A row is a hit when fewer than ``k`` classes score strictly higher than its target (ties
    count as hits, as for the correctness of the calibration metrics). Needs no sort.
    """
    if validate_args:
        _arg_validation(None, ignore_index, from_logits)
        _check_int("k", k, 1)
        _tensor_validation(preds, target, ignore_index, from_logits)
        if k > preds.shape[1]:
            raise ValueError(
                f"`k` must be at most the number of classes {preds.shape[1]}; got {k}."
            )
    return _row_reduce(preds, target, ignore_index, "topk", from_logits, k)


def topk_accuracy(
    preds: Tensor,
    target: Tensor,
    k: int = 1,
    ignore_index: int | None = None,
    *,
    from_logits: bool = True,
    validate_args: bool = True,
) -> Tensor:
    """Top-``k`` accuracy of one batch (float64); see :class:`~.TopKAccuracy`.

    Example:
        >>> logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
        >>> topk_accuracy(logits, torch.tensor([1, 1]), k=2).item()
        1.0
    """
    hits, count = topk_accuracy_stats(
        preds, target, k, ignore_index, from_logits=from_logits, validate_args=validate_args
    )
    return hits.to(_F64) / count
