"""The private per-row engine shared by the metric families.

Chunked float64 passes over ``(N, C, *spatial)`` inputs viewed as ``(N, C, P)``
(:func:`_as_3d`, :func:`_chunks`, :func:`_shifted_logits`), the top-label confidence and
correctness of every row (:func:`_top_prepare`, :func:`_top_confidence`, :func:`_top_label`,
and the public :func:`confidence_and_correct`), and :func:`_bincount`, the bincount with a
dropped extra bin for ignored rows. The conventions are those of
:mod:`lightning_calib.metrics.functional`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from lightning_calib.metrics.functional._validation import (
    _arg_validation,
    _check_temperature_use,
    _tensor_validation,
)
from lightning_calib.rows import safe_target, valid_mask

__all__ = ["confidence_and_correct"]

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
    conf, correct, keep = _top_label(preds, target, ignore_index, from_logits, temperature)
    if keep is None:
        return conf, correct
    return conf[keep], correct[keep]


def _bincount(idx: Tensor, size: int, weights: Tensor | None = None) -> Tensor:
    """``bincount`` of ``idx`` in ``[0, size]``, the extra last bin (ignored rows) dropped."""
    out = torch.bincount(idx, weights=weights, minlength=size + 1)[:size]
    if weights is not None and out.dtype != weights.dtype:  # empty input: int64 zeros
        out = out.to(weights.dtype)
    return out
