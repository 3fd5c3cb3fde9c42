"""The private per-row engine shared by the metric families.

Chunked float64 passes over ``(N, C, *spatial)`` inputs viewed as ``(N, C, P)``
(:func:`_as_3d`, :func:`_chunks`, :func:`_shifted_logits`), the top-label confidence and
correctness of every row under a grid of temperatures (:func:`_top_prepare`,
:func:`_grid_confidence`), :func:`row_pass` (one pass giving every per-row quantity a metric set
reads) and the public :func:`confidence_and_correct`, and :func:`_bincount`, the bincount with a
dropped extra bin for ignored rows. The conventions are those of
:mod:`lightning_calib.metrics.functional`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_calib.metrics.functional._validation import (
    _arg_validation,
    _check_temperature_use,
    _tensor_validation,
)
from lightning_calib.rows import safe_target, valid_mask

__all__ = ["RowPass", "class_argmax", "confidence_and_correct", "row_pass"]

_F64 = torch.float64


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


# exp(x) below this is 0 or subnormal in float64, which CPUs compute 5-17x slower; the rows'
# sums hold a term of 1 (the shifted maximum), so clamping there changes no sum
_EXP_FLOOR = -700.0


def _grid_confidence(
    z3: Tensor, zmax: Tensor, from_logits: bool, temperatures: Tensor
) -> Iterator[tuple[slice, Tensor]]:
    """Top softmax probability of ``z / T`` for every row and temperature, float64.

    Yields ``(slice of the temperatures, conf (g, N * P))`` group by group, ``g`` temperatures
    at a time with ``g * N * P`` bounded, so memory stays that of a few chunks. The logits are
    shifted by their row maximum once per chunk (exact for float32 inputs) and every
    temperature of a group is applied to that chunk in one broadcast product: one pass per
    group instead of a handful of small operations per temperature (100 temperatures on a
    batch of 512 rows cost mostly Python overhead). Exponents are clamped at ``-700`` (see
    ``_EXP_FLOOR``).
    """
    n, c, p = z3.shape
    rows, k = n * p, len(temperatures)
    device = z3.device
    if rows == 0 or not from_logits:
        conf = zmax.to(_F64).reshape(1, -1) if rows else torch.zeros(1, 0, dtype=_F64)
        for t in range(k):
            yield slice(t, t + 1), conf.to(device)
        return
    budget = _chunk_elements(device)
    group = max(1, min(k, (4 * budget) // rows))  # conf of a group: at most 4 chunks' worth
    inverse = temperatures.to(device=device, dtype=_F64).reciprocal()
    zmax64 = zmax.to(_F64)
    for start in range(0, k, group):
        sl = slice(start, min(start + group, k))
        inv = inverse[sl]
        g = len(inv)
        sums = torch.empty((g, n, p), dtype=_F64, device=device)
        per = max(1, budget // g)  # scores per chunk, so that g copies fit the budget
        buf = torch.empty(min(budget, g * z3.numel()), dtype=_F64, device=device)
        for rs, ps in _chunks(n, c, p, per):
            zc = z3[rs, :, ps]
            d = zc.to(_F64).sub_(zmax64[rs, :, ps])  # (m, c, s), <= 0
            e = buf[: g * d.numel()].view(g, *d.shape)
            torch.mul(d.unsqueeze(0), inv.view(g, 1, 1, 1), out=e)
            torch.sum(e.clamp_(min=_EXP_FLOOR).exp_(), dim=2, out=sums[:, rs, ps])
        yield sl, sums.reciprocal_().view(g, rows)


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
        from_logits: whether ``preds`` are logits; if not, probabilities in ``[0, 1]`` whose
            rows sum to 1 over dim 1 within ``2 * max(eps(preds.dtype), eps(float16))``
            (1.95e-3; 1.56e-2 for bfloat16).
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
    rows = row_pass(preds, target, ignore_index, from_logits=from_logits, temperature=temperature)
    if rows.keep is None:
        return rows.conf, rows.correct
    return rows.conf[rows.keep], rows.correct[rows.keep]


def _bincount(idx: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
    """``bincount`` of ``idx`` in ``[0, size]``, the extra last bin (ignored rows) dropped.

    A ``scatter_add_`` into ``size + 1`` zeros rather than ``torch.bincount``: the same sums
    in the same (index) order, but measured 10-16x faster on CPU for 1M rows (bincount scans
    the input for its minimum and maximum first and does not vectorize the weighted case).
    Counts are int64, sums take the dtype of ``weights``.
    """
    dtype = torch.long if weights is None else weights.dtype
    out = torch.zeros(size + 1, dtype=dtype, device=idx.device)
    src = torch.ones_like(idx) if weights is None else weights
    return out.scatter_add_(0, idx.reshape(-1), src.reshape(-1))[:size]


# --- the shared pass ------------------------------------------------------------------------


@dataclass(eq=False)
class RowPass:
    """Everything the top-label and class-wise metrics read from one batch, from one pass.

    Built by :func:`row_pass`. Rows come in ``(N, *spatial)`` order, ignored rows included
    (their values are unspecified; ``keep`` marks the valid ones, ``None``: all valid).
    A :class:`~lightning_calib.metrics.presets.MetricSet` builds one per batch with the union
    of what its members need, and hands it to each member's ``update``; a metric alone builds
    its own, with the same function, so both paths give the same numbers.

    Attributes:
        n: images (or rows of a classification batch).
        p: positions per image (1 for classification).
        target: ``(N * P,)`` class indices with ignored rows replaced by 0.
        keep: ``(N * P,)`` valid rows, or ``None``.
        conf: ``(N * P,)`` float64 top-label probability.
        correct: ``(N * P,)`` bool, the target ties the maximum.
        nll: ``(N * P,)`` float64 ``-log p_y``, when asked for.
        labels: ``(N * P,)`` int64 arg-max (first maximum), when asked for.
        classwise: ``{n_bins: (count, conf_sum, correct_sum)}``, each ``(C, n_bins)``, the
            class-wise bins of every class probability of the valid rows, when asked for.
    """

    n: int
    p: int
    from_logits: bool
    ignore_index: int | None
    temperature: float
    target: Tensor
    keep: Tensor | None
    conf: Tensor
    correct: Tensor
    nll: Tensor | None = None
    labels: Tensor | None = None
    classwise: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    _bins: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _image_bins: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def satisfies(
        self,
        ignore_index: int | None,
        from_logits: bool,
        nll: bool = False,
        labels: bool = False,
        classwise_bins: tuple[int, ...] = (),
    ) -> bool:
        """Whether this pass was built for these arguments and holds what is asked for."""
        return (
            self.ignore_index == ignore_index
            and self.from_logits == from_logits
            and self.temperature == 1.0
            and (self.nll is not None or not nll)
            and (self.labels is not None or not labels)
            and all(b in self.classwise for b in classwise_bins)
        )

    def image_bins(self, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
        """Per-image equal-width bins of the valid rows' confidences, cached.

        ``(count, conf_sum, correct_sum)``, each ``(N, n_bins)``: the image-wise ECE reads
        them per image, the pooled ECE and MCE summed over the images (the same sums).
        """
        if n_bins not in self._image_bins:
            from lightning_calib.metrics.functional.binned import _binned_top_label

            shape = (self.n, self.p)
            keep = None if self.keep is None else self.keep.view(shape)
            bins = self.top_bins(n_bins).view(shape)
            self._image_bins[n_bins] = _binned_top_label(
                self.conf.view(shape), self.correct.view(shape), keep, n_bins, bins
            )
        return self._image_bins[n_bins]

    def top_bins(self, n_bins: int) -> Tensor:
        """Equal-width bin of every row's confidence (:func:`~.binned.bin_index`), cached."""
        if n_bins not in self._bins:
            from lightning_calib.metrics.functional.binned import bin_index

            self._bins[n_bins] = bin_index(self.conf, n_bins)
        return self._bins[n_bins]


def row_pass(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None,
    *,
    from_logits: bool = True,
    nll: bool = False,
    labels: bool = False,
    classwise_bins: tuple[int, ...] = (),
    temperature: float = 1.0,
) -> RowPass:
    r"""One chunked float64 pass over a batch: per-row confidence, correctness, NLL, labels.

    Each chunk of at most :func:`_chunk_elements` scores is copied once into a reused float64
    buffer (exact for float32 / float16 / bfloat16 inputs), shifted by its row maxima,
    exponentiated and summed over the classes; every per-row quantity, and with
    ``classwise_bins`` the class-wise bin sums, is read from that buffer while it is in cache.
    Inputs are not checked here (see :func:`._validation._tensor_validation`).

    From logits, :math:`\hat p_i = 1 / \sum_k e^{z_{ik} - \max_k z_{ik}}` and
    :math:`-\log p_{iy} = \log \sum_k e^{z_{ik} - \max z_i} - (z_{iy} - \max z_i)`.

    **Class-wise bins without binning every probability.** A row's probabilities sum to 1, so
    at most ``B - 1`` of them exceed ``1/B``; the rest all fall in the first bin. Only the
    probabilities above ``(1 - 1e-12)/B`` are selected and binned by
    :func:`~.binned.bin_index`; the first bin's count and sum are the class totals (one
    reduction) minus the selected ones. On 21-class VOC-like logits ~10% of the
    probabilities are selected.

    Args:
        preds: logits (or probabilities with ``from_logits=False``) ``(N, C, *spatial)`` or
            ``(N, C)``.
        target: class indices ``(N, *spatial)`` or ``(N,)``.
        ignore_index: target value of the rows to drop.
        from_logits: whether ``preds`` are logits.
        nll: also compute the per-row NLL.
        labels: also compute the per-row arg-max (the first maximum; :func:`_labels`).
        classwise_bins: numbers of equal-width bins for the class-wise statistics.
        temperature: divide the logits by this ``T > 0`` first (logits only).
    """
    z3, t2 = _as_3d(preds, target)
    n, c, p = z3.shape
    device = z3.device
    flat_t = t2.reshape(-1)
    keep = valid_mask(flat_t, ignore_index)
    safe = safe_target(t2, keep)  # (n, p)
    conf = torch.empty((n, p), dtype=_F64, device=device)
    correct = torch.empty((n, p), dtype=torch.bool, device=device)
    nll_out = torch.empty((n, p), dtype=_F64, device=device) if nll else None
    label_out = torch.empty((n, p), dtype=torch.long, device=device) if labels else None
    bins = tuple(dict.fromkeys(int(b) for b in classwise_bins))
    cw = {b: _ClasswiseBins(c, b, device) for b in bins}
    # one selection serves every bin count: the probabilities above the lowest threshold
    threshold = min((acc.threshold for acc in cw.values()), default=0.0)
    p_y_out = torch.empty((n, p), dtype=_F64, device=device) if cw else None
    keep2 = None if keep is None else keep.view(n, p)
    budget = _chunk_elements(device)
    buf = torch.empty(min(budget, max(1, z3.numel())), dtype=_F64, device=device)
    eq_buf = torch.empty_like(buf) if labels else buf
    for rs, ps in _chunks(n, c, p, budget) if n * p else ():
        d, zc, rows = _load_chunk(z3[rs, :, ps], buf, rs, ps)
        tc = rows(safe).unsqueeze(1)  # (g, 1, m)
        conf_c = rows(conf)
        top = d.amax(1, keepdim=True)
        if labels:
            _labels(d, top, zc, eq_buf, rows(label_out))
        if from_logits:
            d.sub_(top)
            d_y = d.gather(1, tc).squeeze(1)  # z_y - max z: exact for float32 inputs
            torch.eq(d_y, 0.0, out=rows(correct))
            if temperature != 1.0:
                d.div_(temperature)
                d_y.div_(temperature)
            s = d.exp_().sum(1)
            torch.reciprocal(s, out=conf_c)
            if nll:
                torch.sub(s.log(), d_y, out=rows(nll_out))
            if cw:
                torch.mul(d_y.exp_(), conf_c, out=rows(p_y_out))
                w = conf_c if keep2 is None else conf_c * rows(keep2)
                d.mul_(w.unsqueeze(1))  # the probabilities, zero on the dropped rows
        else:
            torch.amax(d, 1, out=conf_c)
            p_y = d.gather(1, tc).squeeze(1)
            torch.eq(p_y, conf_c, out=rows(correct))
            if cw:
                rows(p_y_out).copy_(p_y)
                if keep2 is not None:
                    d.mul_(rows(keep2).unsqueeze(1))
            if nll:
                torch.neg(p_y.log_(), out=rows(nll_out))
        if cw:
            kd, _, sc = d.shape
            sel = (d >= threshold).view(-1).nonzero().squeeze(1)
            values = d.view(-1)[sel]
            row = torch.div(sel, sc, rounding_mode="floor")  # (image, class) row of the chunk
            cls = row if kd == 1 else row.remainder_(c)
            total = d.sum(2).sum(0)  # per block first: split across threads like the rest
            for acc in cw.values():
                acc.add(values, cls, total)
    n_valid = n * p if keep is None else int(keep.sum())
    return RowPass(
        n=n,
        p=p,
        from_logits=from_logits,
        ignore_index=ignore_index,
        temperature=float(temperature),
        target=safe.reshape(-1),
        keep=keep,
        conf=conf.reshape(-1),
        correct=correct.reshape(-1),
        nll=None if nll_out is None else nll_out.reshape(-1),
        labels=None if label_out is None else label_out.reshape(-1),
        classwise={
            b: acc.result(n_valid, p_y_out.view(-1), safe.view(-1), keep) for b, acc in cw.items()
        },
    )


def _load_chunk(
    zc: Tensor, buf: Tensor, rs: slice, ps: slice
) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
    """Copy a ``(k, C, s)`` chunk into ``buf`` as float64, in blocks the CPU threads all agree on.

    Returns ``(d, scores, rows)``: the float64 copy ``d`` of shape ``(g, C, m)``, the chunk's
    scores in the same layout (a view), and ``rows(x)``, which views the chunk's ``(k, s)``
    part ``x[rs, ps]`` of an ``(N, P)`` per-row tensor as ``(g, m)``.

    **Why blocks.** ATen splits an elementwise operation over the flat index of ``d``, one
    contiguous range per thread, but a reduction over the class dim along the outermost
    kept dim that has at least one entry per thread. On a one-image chunk ``(1, C, s)`` the
    elementwise operations hand thread 0 the first half of the *classes* and the reductions
    the first half of the *pixels*, so each switch between the two moves half the buffer from
    one core's cache to the other's. That costs little where the cores share a cache. On this
    project's 2-vCPU test machines it cost a lot for minutes at a time, presumably when the
    host ran the two vCPUs on cores that share none: 20 rounds of an elementwise operation
    and a maximum over the classes of a ``(1, 21, 49932)`` float64 chunk went from 3.0 to
    22.5 ms while 20 rounds of two elementwise operations stayed at 3.2 ms, and the pass over
    a 4x21x512x512 batch went from 125 to 210 ms. Cut into ``T`` blocks of ``m = s / T``
    pixels (``T`` the intra-op threads), ``(k * T, C, m)``, both kinds of operation hand
    thread ``i`` block ``i``, and the same pass took 130 and 142 ms in the two states. Per-row
    results are those of the unsplit chunk except where ATen's class sum handles the last few
    pixels of a block (its length modulo the vector width) otherwise: there they may differ
    in the last bit.
    """
    k, c, s = zc.shape
    threads = torch.get_num_threads() if zc.device.type == "cpu" else 1
    b = threads if threads > 1 and k % threads and s % threads == 0 else 1
    m = s // b
    if b == 1:
        d = buf[: zc.numel()].view(zc.shape).copy_(zc)
        return d, zc, lambda x: x[rs, ps]
    scores = zc.reshape(k, c, b, m).transpose(1, 2)  # (k, b, C, m), a view
    d = buf[: zc.numel()].view(k, b, c, m).copy_(scores).view(k * b, c, m)
    return d, scores, lambda x: x[rs, ps].reshape(k * b, m)


def class_argmax(preds: Tensor) -> Tensor:
    """``preds.argmax(1)`` (the first maximum) of ``(N, C, *spatial)`` scores, chunk by chunk.

    The same labels as :func:`row_pass` gives (:func:`_labels`), for a caller that needs only
    them: on CPU ``argmax(1)`` over a dense batch is a strided reduction. Measured on
    4x21x512x512 float32: 109 ms for ``argmax(1)``, 24 ms for this (2 threads; 182 and 52 ms
    on one).

    Example:
        >>> z = torch.tensor([[[[0.0, 2.0]], [[1.0, 2.0]], [[1.0, -1.0]]]])  # (1, 3, 1, 2)
        >>> class_argmax(z).tolist()
        [[[1, 0]]]
    """
    n, c = preds.shape[0], preds.shape[1]
    z3 = preds.detach().reshape(n, c, -1)
    p = z3.shape[2]
    out = torch.empty((n, p), dtype=torch.long, device=preds.device)
    budget = _chunk_elements(preds.device)
    buf = torch.empty(min(budget, max(1, z3.numel())), dtype=_F64, device=preds.device)
    eq_buf = torch.empty_like(buf)
    for rs, ps in _chunks(n, c, p, budget) if n * p else ():
        d, zc, rows = _load_chunk(z3[rs, :, ps], buf, rs, ps)
        _labels(d, d.amax(1, keepdim=True), zc, eq_buf, rows(out))
    return out.view(n, *preds.shape[2:])


def _labels(d: Tensor, top: Tensor, zc: Tensor, eq_buf: Tensor, out: Tensor) -> None:
    """Arg-max (the first maximum) of a ``(g, C, m)`` chunk ``d`` (row maxima ``top``).

    The indicator of the maxima, weighted by ``1 + (C + 1) j`` for class ``j`` and summed over
    the classes, is ``count + (C + 1) * (sum of the maxima's indices)`` with ``count <= C``:
    one reduction gives every row's number of maxima (the sum modulo ``C + 1``) and, where
    that is 1, the index of its maximum (the floored quotient), exact integers in float64.
    Rows with tied maxima, rare, are ranked again from the scores ``zc``. Measured on CPU: ~4x
    cheaper than ``max`` with indices (a strided reduction with an index over the class
    dim), which costs as much as the exponentials. An elementwise product and a reduction
    over the classes rather than one small matrix product: a batched product splits its
    work across the threads otherwise than the rest of the pass (see :func:`_load_chunk`).
    """
    c = d.shape[1]
    eq = eq_buf[: d.numel()].view(d.shape)
    torch.eq(d, top, out=eq)
    code = torch.arange(c, dtype=d.dtype, device=d.device).mul_(c + 1).add_(1)
    total = eq.mul_(code.view(1, c, 1)).sum(1)  # (g, m)
    ties = (total.remainder(c + 1) > 1).nonzero(as_tuple=True)
    out.copy_(total.div_(c + 1, rounding_mode="floor"))
    if ties[0].numel():
        scores = zc.reshape(-1, c, zc.shape[-1])  # a copy only for a chunk split in blocks
        out[ties] = scores.permute(0, 2, 1)[ties].argmax(1)


class _ClasswiseBins:
    """Accumulates the class-wise bins of :func:`row_pass` chunk by chunk."""

    def __init__(self, c: int, n_bins: int, device: torch.device) -> None:
        self.c, self.n_bins = c, n_bins
        self.count = torch.zeros(c * n_bins, dtype=torch.long, device=device)
        self.conf_sum = torch.zeros(c * n_bins, dtype=_F64, device=device)
        self.total = torch.zeros(c, dtype=_F64, device=device)
        # below this no probability leaves the first bin, whatever the rounding of p * B
        self.threshold = (1.0 - 1e-12) / n_bins

    def add(self, values: Tensor, cls: Tensor, total: Tensor) -> None:
        """Add a chunk: its selected probabilities, their classes, its per-class sums."""
        from lightning_calib.metrics.functional.binned import bin_index

        self.total += total
        key = cls.mul(self.n_bins).add_(bin_index(values, self.n_bins))
        self.count.scatter_add_(0, key, torch.ones_like(key))
        self.conf_sum.scatter_add_(0, key, values)

    def result(
        self, n_valid: int, p_y: Tensor, target: Tensor, keep: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(count, conf_sum, correct_sum)``, each ``(C, n_bins)``, first bins completed.

        ``correct_sum``: every valid row counts once, in its target class, in the bin of its
        target's probability ``p_y``.
        """
        from lightning_calib.metrics.functional.binned import bin_index

        count = self.count.view(self.c, self.n_bins)
        conf_sum = self.conf_sum.view(self.c, self.n_bins)
        count[:, 0] += n_valid - count.sum(1)
        conf_sum[:, 0] += self.total - conf_sum.sum(1)
        key = bin_index(p_y, self.n_bins).add_(target * self.n_bins)
        if keep is not None:
            key.masked_fill_(~keep, self.c * self.n_bins)
        hits = _bincount(key, self.c * self.n_bins)
        return count, conf_sum, hits.view(self.c, self.n_bins)
