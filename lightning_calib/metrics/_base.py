"""Shared base of the metric classes: common arguments, exact accumulators, synced reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_calib.metrics import functional as F
from lightning_calib.metrics.functional import _arg_validation


class _ExactMetric(Metric):
    """A metric whose states are exact float64 / int64 accumulators.

    Subclasses ``add_state`` with ``dist_reduce_fx="sum"`` (or ``"cat"``) and update them out
    of place (``self.x = self.x + ...``: with ``ddp_spawn`` the states live in shared memory,
    and an in-place ``+=`` would add twice).

    :meth:`set_dtype` leaves the accumulators alone: casting an int64 count to float32 would
    bring back the 2**24 saturation these metrics exist to avoid. (``.half()`` / ``.double()``
    never touch metric states in torchmetrics.)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound: float | None = 0.0
    plot_upper_bound: float | None = 1.0

    def __init__(
        self,
        ignore_index: int | None = None,
        from_logits: bool = True,
        validate_args: bool = True,
        n_bins: int | None = None,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _arg_validation(n_bins, ignore_index, from_logits, num_classes)
        if not isinstance(validate_args, bool):
            raise ValueError(f"`validate_args` must be a bool; got {validate_args!r}.")
        self.ignore_index = ignore_index
        self.from_logits = from_logits
        self.validate_args = validate_args

    def row_pass_needs(self) -> dict[str, Any] | None:
        """What ``update`` reads from a :class:`~.functional.RowPass` (``None``: no pass).

        A :class:`~lightning_calib.metrics.presets.MetricSet` builds one pass per batch with
        the union of its members' needs (keys of :func:`~.functional.row_pass`).
        """
        return None

    def _rows(
        self, preds: Tensor, target: Tensor, rows: F.RowPass | None, **needs: Any
    ) -> F.RowPass:
        """The :class:`~.functional.RowPass` of the batch: the one given, or a new one.

        A metric set passes the one it built for every member; it is used when it was built
        for this metric's ``ignore_index`` and ``from_logits`` and holds ``needs``
        (``nll``, ``labels``, ``classwise_bins``). Otherwise (alone, or a pass that does not
        fit) the batch is validated (under ``validate_args``) and passed over here, with the
        same function: both paths give the same numbers.
        """
        if rows is not None and rows.satisfies(self.ignore_index, self.from_logits, **needs):
            return rows
        if self.validate_args:
            num_classes = getattr(self, "num_classes", None)
            F._tensor_validation(preds, target, self.ignore_index, self.from_logits, num_classes)
        return F.row_pass(preds, target, self.ignore_index, from_logits=self.from_logits, **needs)

    def _add_sum_state(self, name: str, shape: Sequence[int], dtype: torch.dtype) -> None:
        self.add_state(name, torch.zeros(tuple(shape), dtype=dtype), dist_reduce_fx="sum")

    def _add_to(self, **values: Tensor) -> None:
        """``state = state + value`` for each named sum state, out of place, on its device."""
        for name, value in values.items():
            state = getattr(self, name)
            setattr(self, name, state + value.to(state.device))

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = ()) -> torch.nn.Module:
        if self._dtype_convert:  # set_dtype: keep the exact accumulators as they are
            exclude_state = tuple(self._defaults)
        return super()._apply(fn, exclude_state)

    def _synced_states(self) -> dict[str, Tensor | list[Tensor]]:
        """The states reduced over every process (as :meth:`compute` sees them), copied."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return {
                name: (value.clone() if isinstance(value, Tensor) else [v.clone() for v in value])
                for name, value in ((n, getattr(self, n)) for n in self._defaults)
            }

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot the value(s) as torchmetrics does; returns ``(fig, ax)``.

        Args:
            val: a value or a list of values from :meth:`compute` / :meth:`forward`; computed
                from the states when ``None``.
            ax: a matplotlib ``Axes`` to draw on; a new figure when ``None``.
        """
        return self._plot(val, ax)
