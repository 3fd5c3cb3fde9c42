"""Flatten-and-mask: the one place where predictions become rows.

Every loss in :mod:`losses` and every metric in :mod:`lightning_calib.metrics` accepts
classification shapes ``(N, C)`` with target ``(N,)`` and dense shapes ``(N, C, *spatial)``
with target ``(N, *spatial)``. They all call :func:`to_rows` (or :func:`flatten` plus
:func:`valid_mask` when they want to avoid the copy of the masked rows), so the class-dim move,
the flattening and the ``ignore_index`` handling live here and nowhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_inputs", "flatten", "safe_target", "to_rows", "valid_mask"]


def check_inputs(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    num_classes: int | None = None,
    preds_name: str = "preds",
    check_values: bool = True,
) -> None:
    """Validate a ``(preds, target)`` pair; raise ``ValueError`` naming what is wrong.

    Args:
        preds: scores of shape ``(N, C)`` or ``(N, C, *spatial)``, floating point.
        target: class indices of shape ``(N,)`` or ``(N, *spatial)``, integer.
        ignore_index: target value that marks rows to drop, or ``None``.
        num_classes: the expected ``C``, when the caller knows it.
        preds_name: how the error messages call ``preds`` (``"logits"`` in the losses).
        check_values: check the target values (one pass over the target); ``False`` only for
            a caller that checks them itself, with the same error.

    Raises:
        ValueError: wrong rank, shape mismatch, non-floating ``preds``, non-integer ``target``,
            a class count different from ``num_classes``, or a target value outside
            ``[0, C)`` that is not ``ignore_index``.
    """
    if preds.ndim < 2:
        raise ValueError(
            f"`{preds_name}` must have shape (N, C) or (N, C, *spatial); got {tuple(preds.shape)}."
        )
    if not preds.is_floating_point():
        raise ValueError(f"`{preds_name}` must be floating point; got dtype {preds.dtype}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"`target` must hold integer class indices; got dtype {target.dtype}.")
    expected = (preds.shape[0], *preds.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"`target` must have shape {expected} to match `{preds_name}` of shape "
            f"{tuple(preds.shape)} (class dim 1 removed); got {tuple(target.shape)}."
        )
    n_cls = preds.shape[1]
    if num_classes is not None and n_cls != num_classes:
        raise ValueError(
            f"`{preds_name}` has {n_cls} classes in dim 1; expected num_classes={num_classes}."
        )
    if not check_values or target.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(target))
    if (lo < 0 or hi >= n_cls) and ignore_index is not None and lo <= ignore_index <= hi:
        # only now look past the ignore index (one pass, no copy of the valid entries)
        checked = target.masked_fill(target == ignore_index, 0)
        lo, hi = (int(v) for v in torch.aminmax(checked))
    if lo < 0 or hi >= n_cls:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"`target` holds the value {bad}; expected class indices in [0, {n_cls})"
            + (f" or ignore_index={ignore_index}." if ignore_index is not None else ".")
        )


def flatten(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Move the class dim last and flatten everything else into rows.

    Args:
        preds: ``(N, C)`` or ``(N, C, *spatial)``.
        target: ``(N,)`` or ``(N, *spatial)``.

    Returns:
        ``(rows, target)`` of shapes ``(M, C)`` and ``(M,)`` with ``M = N * prod(spatial)``.
        Classification inputs come back as they are (no copy).
    """
    if preds.ndim == 2:
        return preds, target.reshape(-1)
    n_cls = preds.shape[1]
    return preds.movedim(1, -1).reshape(-1, n_cls), target.reshape(-1)


def valid_mask(target: Tensor, ignore_index: int | None) -> Tensor | None:
    """Boolean mask of rows to keep, or ``None`` when every row is kept.

    Returns ``None`` when ``ignore_index`` is ``None``, and on the CPU when no row carries it,
    so the caller can skip the masked copy. On accelerators the mask is returned without that
    check: reading it would make the host wait for the device.
    """
    if ignore_index is None:
        return None
    keep = target != ignore_index
    if target.device.type == "cpu" and bool(keep.all()):
        return None
    return keep


def safe_target(target: Tensor, keep: Tensor | None) -> Tensor:
    """``target`` as int64 with the rows outside ``keep`` set to class 0.

    For code that works on the unmasked layout (no row copy) and weights ignored rows out:
    the ignored entries can then index a ``gather``/``scatter`` safely.

    Example:
        >>> t = torch.tensor([2, 255, 1])
        >>> safe_target(t, valid_mask(t, 255)).tolist()
        [2, 0, 1]
    """
    if keep is None:
        return target.long()
    return target.masked_fill(~keep.view(target.shape), 0).long()


def to_rows(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None = None,
    *,
    validate: bool = True,
    num_classes: int | None = None,
    preds_name: str = "preds",
) -> tuple[Tensor, Tensor]:
    """Flatten ``preds``/``target`` into rows and drop the rows whose target is ``ignore_index``.

    Args:
        preds: ``(N, C)`` or ``(N, C, *spatial)`` scores (logits or probabilities).
        target: ``(N,)`` or ``(N, *spatial)`` integer class indices.
        ignore_index: target value whose rows are dropped; ``None`` keeps every row.
        validate: run :func:`check_inputs` first (turn off in hot loops).
        num_classes: expected class count, checked when ``validate``.
        preds_name: name used for ``preds`` in error messages.

    Returns:
        ``(rows, target)`` of shapes ``(M, C)`` and ``(M,)``, ``M`` the number of valid rows.

    Example:
        >>> logits = torch.zeros(1, 3, 2, 2)
        >>> target = torch.tensor([[[0, 255], [2, 1]]])
        >>> rows, t = to_rows(logits, target, ignore_index=255)
        >>> rows.shape, t.tolist()
        (torch.Size([3, 3]), [0, 2, 1])
    """
    if validate:
        check_inputs(preds, target, ignore_index, num_classes=num_classes, preds_name=preds_name)
    rows, flat = flatten(preds, target)
    keep = valid_mask(flat, ignore_index)
    if keep is None:
        return rows, flat
    return rows[keep], flat[keep]
