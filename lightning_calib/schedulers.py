r"""Learning-rate schedules the recipes need beyond ``torch.optim.lr_scheduler``.

:class:`WarmupCosineLR` is the ImageNet recipe's "cosine with 1 warm-up epoch". It counts
in whatever unit it is stepped in: with ``model.scheduler_interval: epoch`` (the shipped
configs) ``warmup_epochs`` and ``max_epochs`` are epochs, and the LR changes at each epoch
start, as timm's epoch-stepped schedulers do; with ``scheduler_interval: step`` give them
in optimizer steps instead (``epochs * steps_per_epoch``) for a per-step warm-up.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosineLR", "warmup_cosine_factor"]


def warmup_cosine_factor(
    t: int, warmup_epochs: int, max_epochs: int, warmup_start_factor: float, min_factor: float
) -> float:
    r"""Multiplier of the base LR at step ``t`` (closed form).

    .. math::

        f(t) = \begin{cases}
            s + (1 - s)\,t / W & t < W \\
            m + (1 - m)\,\tfrac12\bigl(1 + \cos(\pi\,\min(t - W, T - W) / (T - W))\bigr)
                & t \ge W
        \end{cases}

    with ``W = warmup_epochs``, ``T = max_epochs``, ``s = warmup_start_factor`` and ``m =
    min_factor`` (``eta_min / base_lr``). After ``T`` the factor stays at ``m``.

    Example:
        >>> [round(warmup_cosine_factor(t, 1, 3, 0.1, 0.0), 3) for t in range(4)]
        [0.1, 1.0, 0.5, 0.0]
    """
    if t < warmup_epochs:
        return warmup_start_factor + (1.0 - warmup_start_factor) * t / warmup_epochs
    span = max_epochs - warmup_epochs
    progress = min(t - warmup_epochs, span) / span
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``warmup_start_factor * lr`` to ``lr``, then cosine to ``eta_min``.

    Epoch ``t`` (0-based; the value after ``t`` calls of ``step()``) uses
    ``eta_min + (lr - eta_min) * g(t)`` during the cosine phase and
    ``lr * (s + (1 - s) t / W)`` during the warm-up: see :func:`warmup_cosine_factor`. The LR
    is computed in closed form from the step count, so resuming (``state_dict``) is exact.

    Args:
        optimizer: the wrapped optimizer (its current ``lr`` of each group is the peak).
        warmup_epochs: steps of linear warm-up (0 = none).
        max_epochs: total steps; the cosine reaches ``eta_min`` there.
        warmup_start_factor: LR multiplier at step 0 (in ``(0, 1]``).
        eta_min: final LR.
        last_epoch: the index of the last step, for resuming (-1 = start).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = WarmupCosineLR(opt, warmup_epochs=2, max_epochs=4, warmup_start_factor=0.5)
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.5, 0.75, 1.0, 0.5, 0.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int,
        max_epochs: int,
        warmup_start_factor: float = 0.01,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_epochs < 0 or max_epochs <= warmup_epochs:
            raise ValueError(
                "need 0 <= warmup_epochs < max_epochs; got "
                f"warmup_epochs={warmup_epochs}, max_epochs={max_epochs}."
            )
        if not 0.0 < warmup_start_factor <= 1.0:
            raise ValueError(f"`warmup_start_factor` must be in (0, 1]; got {warmup_start_factor}.")
        if eta_min < 0:
            raise ValueError(f"`eta_min` must be >= 0; got {eta_min}.")
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_factor = warmup_start_factor
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def _lr_at(self, base_lr: float, t: int) -> float:
        if t < self.warmup_epochs:
            f = warmup_cosine_factor(
                t, self.warmup_epochs, self.max_epochs, self.warmup_start_factor, 0.0
            )
            return base_lr * f
        g = warmup_cosine_factor(t, self.warmup_epochs, self.max_epochs, 1.0, 0.0)
        return self.eta_min + (base_lr - self.eta_min) * g

    def get_lr(self) -> list[float]:
        """LR of each param group at the current step (closed form)."""
        t = max(self.last_epoch, 0)
        return [self._lr_at(base, t) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()
