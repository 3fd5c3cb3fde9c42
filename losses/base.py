"""The protocol every loss of :mod:`losses` follows, and the batch view they share.

A loss is an :class:`torch.nn.Module` called as ``loss(logits, target)``; it returns the scalar
mean over the valid rows, so it drops in where :class:`torch.nn.CrossEntropyLoss` does. It also
has :meth:`CalibrationLoss.forward_with_parts`, which returns the same total together with the
loss's named parts for logging. The LightningModule uses it as::

    parts_fn = getattr(loss, "forward_with_parts", None)
    total, parts = parts_fn(logits, target) if parts_fn else (loss(logits, target), {})

Flattening and masking come from :mod:`lightning_calib.rows`: :func:`~lightning_calib.rows.
check_inputs` validates, :func:`~lightning_calib.rows.valid_mask` gives the rows to keep, and
:func:`~lightning_calib.rows.to_rows` selects rows where a loss needs them packed. Losses work
on the logits in their own layout (class dim 1) and weight per-row terms by the mask, so a
segmentation batch is never copied into masked rows.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn

from lightning_calib.rows import check_inputs, safe_target, to_rows, valid_mask

__all__ = ["Batch", "CalibrationLoss", "check_number"]


def check_number(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Validate a scalar hyper-parameter and return it as a ``float``.

    Args:
        name: the argument's name, used in the error message.
        value: the value given.
        low: smallest allowed value (``None``: unbounded below).
        high: largest allowed value, inclusive (``None``: unbounded above).
        low_open: exclude ``low`` itself.

    Raises:
        ValueError: ``value`` is not a real number, is not finite, or is out of range. The
            message names the argument, the expected range and the value given.

    Example:
        >>> check_number("alpha", 0.1, low=0.0, high=1.0)
        0.1
        >>> check_number("margin", -1, low=0.0)
        Traceback (most recent call last):
        ...
        ValueError: `margin` must be a finite number >= 0.0; got -1.
    """
    expected = "a finite number"
    if low is not None:
        expected += f" {'>' if low_open else '>='} {low}"
    if high is not None:
        expected += f"{' and' if low is not None else ''} <= {high}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise ValueError(f"`{name}` must be {expected}; got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class Batch:
    """A validated ``(logits, target)`` pair, seen as rows without copying the logits.

    The mask, the safe target and the denominator are computed on first use (and cached), so
    a loss that reads only ``raw_target`` (the C kernels of :mod:`losses._native`) pays for
    none of them.

    Attributes:
        logits: ``(N, K)`` or ``(N, K, *spatial)``; float32 when the input was half precision.
            The class dim stays at 1: a row is ``logits[n, :, *s]``.
        raw_target: ``(N,)`` or ``(N, *spatial)`` class indices as given, ignored entries
            included.
        ignore_index: the ignored target value.
    """

    logits: Tensor
    raw_target: Tensor
    ignore_index: int

    @cached_property
    def keep(self) -> Tensor | None:
        """Boolean mask of valid rows (shape of the target), or ``None`` when all are valid."""
        return valid_mask(self.raw_target, self.ignore_index)

    @cached_property
    def target(self) -> Tensor:
        """int64 class indices, the ignored entries replaced by ``0``.

        Their weight is zero; the replacement only makes ``gather``/``scatter`` on them safe.
        """
        return safe_target(self.raw_target, self.keep)

    @cached_property
    def denominator(self) -> Tensor | float:
        """The number of valid rows, at least 1.

        A float, or a 0-dim tensor of the logits' dtype when ``keep`` is given (no host
        synchronisation).
        """
        if self.keep is None:
            return float(max(self.raw_target.numel(), 1))
        return self.keep.sum().clamp_min(1).to(self.logits.dtype)

    @property
    def num_classes(self) -> int:
        """``K``, the size of the class dim."""
        return self.logits.shape[1]

    @property
    def weight(self) -> Tensor | float:
        """Per-row weight ``1[valid] / N`` (shape of ``target``), or ``1 / N`` when all valid."""
        if self.keep is None:
            return 1.0 / self.denominator
        return self.keep / self.denominator  # the denominator has the logits' dtype

    def mean(self, per_row: Tensor) -> Tensor:
        """Mean of a per-row quantity (shape of ``target``) over the valid rows.

        Ignored rows are masked with ``where`` (not multiplied), so whatever they hold cannot
        reach the result. With no valid row the result is an exact zero still attached to the
        graph (gradient zero), not ``0/0``.
        """
        if self.keep is None:
            return per_row.sum() / self.denominator
        return torch.where(self.keep, per_row, 0.0).sum() / self.denominator

    def rows(self, per_row: Tensor) -> Tensor:
        """Pack per-row statistics ``(N, C, *spatial)`` into the valid rows ``(M, C)``."""
        return to_rows(per_row, self.raw_target, self.ignore_index, validate=False)[0]


class CalibrationLoss(nn.Module, ABC):
    """Base class of every loss in :mod:`losses`: the call protocol and the shared plumbing.

    **Protocol.**

    - ``loss(logits, target) -> Tensor``: the scalar loss, a mean over the valid rows. Logits
      ``(N, K)`` with target ``(N,)``, or ``(N, K, *spatial)`` with target ``(N, *spatial)``.
      Rows whose target equals ``ignore_index`` are dropped before every term; with no valid
      row the loss is a zero attached to the graph (gradient zero).
    - ``loss.forward_with_parts(logits, target) -> (total, parts)``: the same ``total`` and a
      dict of named parts for logging. ``forward`` is exactly ``forward_with_parts(...)[0]``;
      nothing is computed twice.
    - **Parts are unweighted and detached**: each is its raw term as written in the class's
      formula (``"ce"`` is the plain cross-entropy, ``"reg"`` the regularizer before its
      weight), averaged over the valid rows. They are for logging: differentiate ``total``.
      The keys are listed in the class attribute :attr:`part_names`; a single-term loss
      returns ``{}``.

    **Numerics.** Half-precision logits (float16/bfloat16, e.g. under autocast) are upcast and
    the loss is computed in float32 with autocast disabled; the result is float32. Float64
    stays float64.

    **Validation.** Hyper-parameters are checked at construction (``ValueError`` naming the
    argument, the expected range and the value). With ``validate=True`` every call checks
    shapes, dtypes and target values through :func:`lightning_calib.rows.check_inputs`; turn
    it off in hot loops once the data pipeline is trusted.

    Args:
        ignore_index: target value of the rows to drop.
        validate: check the inputs on every call.
    """

    part_names: tuple[str, ...] = ()

    def __init__(self, ignore_index: int = -100, validate: bool = True) -> None:
        super().__init__()
        if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
            raise ValueError(f"`ignore_index` must be an int; got {ignore_index!r}.")
        if not isinstance(validate, bool):
            raise ValueError(f"`validate` must be a bool; got {validate!r}.")
        self.ignore_index = ignore_index
        self.validate = validate

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss; see :meth:`forward_with_parts`."""
        return self.forward_with_parts(logits, target)[0]

    def forward_with_parts(
        self, logits: Tensor, target: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(total, parts)``: the loss and its unweighted, detached named terms.

        Args:
            logits: ``(N, K)`` or ``(N, K, *spatial)`` unnormalized scores.
            target: ``(N,)`` or ``(N, *spatial)`` class indices in ``[0, K)`` or
                ``ignore_index``.

        Returns:
            The scalar mean loss over the valid rows, and ``{name: term}`` with the keys of
            :attr:`part_names`.

        Raises:
            ValueError: bad shapes, dtypes or target values (when ``validate``).
        """
        batch = self._batch(logits, target)
        if torch.is_autocast_enabled(batch.logits.device.type):
            with torch.autocast(batch.logits.device.type, enabled=False):
                total, parts = self._compute(batch)
        else:
            total, parts = self._compute(batch)
        for name, part in parts.items():
            if part.requires_grad:
                parts[name] = part.detach()
        return total, parts

    @abstractmethod
    def _compute(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute ``(total, parts)`` on a prepared batch (parts may still carry grad)."""

    def _checks_target_values(self, logits: Tensor) -> bool:
        """Whether :meth:`_compute` checks the target values itself on these logits.

        When it does (the C kernel of ACLS/MbLS, which reads every target before any logit),
        validation skips its own pass over the target; the error is the same.
        """
        return False

    def _batch(self, logits: Tensor, target: Tensor) -> Batch:
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if self.validate:
            check_inputs(
                logits,
                target,
                self.ignore_index,
                preds_name="logits",
                check_values=not self._checks_target_values(logits),
            )
        return Batch(logits, target, self.ignore_index)

    def extra_repr(self) -> str:
        """The constructor arguments and their values, for ``repr``."""
        names = inspect.signature(type(self).__init__).parameters
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))
