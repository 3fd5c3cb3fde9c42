"""Post-hoc temperature scaling, searched on a grid with sum statistics.

For every temperature ``T`` of the grid the metric keeps the equal-width reliability sums
(per-bin count, confidence sum, correct count; from
:func:`~lightning_calib.metrics.functional.binned_calibration_stats`) and, for the NLL
criterion, the summed NLL of ``softmax(z / T)``.
These are sums, so they reduce exactly across processes, and the chosen ``T`` is the same on
1 or N GPUs. Dividing logits by ``T > 0`` never changes the arg-max, so accuracy is
unchanged and only the confidences move.

**Cost at pixel scale.** Scoring a grid of ``n_T`` temperatures costs ``n_T`` softmaxes per
row: fine for images (rows), ~100x the metric update for pixels. On dense inputs
``(N, C, H, W)`` the search therefore scores a fixed, deterministic subset of pixel
*positions* (:func:`position_sample`: a hash of ``(row, column)`` keeps a fraction of them,
the same positions in every image). By default the fraction is ``min(1, 1024 / (H W))``:
about 1,024 positions per image whatever its size (1/225 of a 480 x 480 VOC evaluation
image, 1/4 of a 64 x 64 digits-VOC canvas), so the search costs about as much as one softmax
pass over the batch, and a VOC val pass (1,449 images) still scores ~1.5M pixels per
temperature. The subset depends on neither the batch size nor the number of processes, so the
chosen ``T`` is still the same on 1 or N processes; its sums are exact over the sampled
pixels. Measured against the exact full-pixel search: the same ``T``, or one grid step away
(``tests/test_temperature_pixels.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_calib.metrics.functional import (
    _tensor_validation,
    binned_calibration_stats,
    ece_from_stats,
)
from lightning_calib.rows import to_rows

__all__ = ["TemperatureGrid", "position_sample", "temperature_values"]

_POSITION_MASKS: dict[tuple[int, int, float, str], Tensor] = {}


def position_sample(height: int, width: int, fraction: float, device: torch.device) -> Tensor:
    """Boolean ``(height, width)`` mask keeping about ``fraction`` of the pixel positions.

    A position is kept when a 32-bit multiplicative hash of ``(row, column)`` falls below
    ``fraction * 2**32``: scattered (no lattice aliasing with image structure), deterministic,
    and a function of the position alone. At least one position is always kept.

    Example:
        >>> m = position_sample(64, 64, 1 / 16, torch.device("cpu"))
        >>> m.shape, 200 < int(m.sum()) < 320
        (torch.Size([64, 64]), True)
        >>> bool(torch.equal(m, position_sample(64, 64, 1 / 16, torch.device("cpu"))))
        True
    """
    key = (height, width, fraction, str(device))
    mask = _POSITION_MASKS.get(key)
    if mask is None:
        rows = torch.arange(height, dtype=torch.int64).view(-1, 1)
        cols = torch.arange(width, dtype=torch.int64).view(1, -1)
        h = (rows * 0x9E3779B1 + cols * 0x85EBCA77) & 0xFFFFFFFF
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
        h = h ^ (h >> 12)
        mask = h < int(fraction * 2**32)
        mask.view(-1)[0] = True
        mask = mask.to(device)
        if len(_POSITION_MASKS) < 64:
            _POSITION_MASKS[key] = mask
    return mask


def temperature_values(grid: tuple[float, float, float]) -> Tensor:
    """The temperatures ``start, start + step, ..., stop`` (inclusive) as float64."""
    start, stop, step = (float(v) for v in grid)
    if not (start > 0 and stop >= start and step > 0):
        raise ValueError(
            "`temperature_grid` must be (start, stop, step) with 0 < start <= stop and step > 0;"
            f" got {tuple(grid)}."
        )
    n = round((stop - start) / step) + 1
    return start + step * torch.arange(n, dtype=torch.float64)


class TemperatureGrid(Metric):
    """Scores every temperature of a grid on the data it sees; ``compute()`` returns the best.

    Args:
        grid: ``(start, stop, step)``; the public ACLS code searches ``(0.1, 10.0, 0.1)``.
        n_bins: bins of the ECE criterion.
        criterion: ``"ece"`` (lowest ECE, the public code) or ``"nll"`` (lowest NLL).
        ignore_index: target value whose rows are dropped.
        max_chunk_elements: bound on the ``(temperatures, rows, classes)`` block evaluated at
            once, to cap the memory of an update.
        pixel_fraction: on dense inputs, the fraction of pixel positions scored
            (:func:`position_sample`); ``1.0`` scores every pixel; ``None`` (default) keeps
            about ``positions_per_image`` of them, ``min(1, positions_per_image / (H W))``.
            Classification rows are always all scored.
        positions_per_image: the positions kept per image when ``pixel_fraction`` is None.
        validate_args: check each batch (shapes, target range, finite logits); turn off where
            the same batch was already checked.

    Example:
        >>> logits = torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
        >>> target = torch.tensor([0, 1, 1, 0])  # 50% accurate at ~98% confidence
        >>> grid = TemperatureGrid((1.0, 100.0, 1.0), criterion="nll")
        >>> grid.update(logits, target)
        >>> float(grid.compute())  # the flattest softmax is the best calibrated
        100.0
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    count: Tensor
    conf_sum: Tensor
    correct_sum: Tensor
    nll_sum: Tensor

    def __init__(
        self,
        grid: tuple[float, float, float] = (0.1, 10.0, 0.1),
        n_bins: int = 15,
        criterion: str = "ece",
        ignore_index: int | None = None,
        max_chunk_elements: int = 2**24,
        validate_args: bool = True,
        pixel_fraction: float | None = None,
        positions_per_image: int = 1024,
    ) -> None:
        super().__init__()
        if criterion not in ("ece", "nll"):
            raise ValueError(f"`criterion` must be 'ece' or 'nll'; got {criterion!r}.")
        if pixel_fraction is not None and not 0.0 < pixel_fraction <= 1.0:
            raise ValueError(f"`pixel_fraction` must be in (0, 1] or None; got {pixel_fraction!r}.")
        if isinstance(positions_per_image, bool) or not (
            isinstance(positions_per_image, int) and positions_per_image >= 1
        ):
            raise ValueError(
                f"`positions_per_image` must be an int >= 1; got {positions_per_image!r}."
            )
        self.pixel_fraction = None if pixel_fraction is None else float(pixel_fraction)
        self.positions_per_image = positions_per_image
        self.temperatures: Tensor
        self.register_buffer("temperatures", temperature_values(grid), persistent=False)
        self.n_bins = n_bins
        self.criterion = criterion
        self.ignore_index = ignore_index
        self.max_chunk_elements = max_chunk_elements
        self.validate_args = validate_args
        n_t = len(self.temperatures)
        self.add_state("count", torch.zeros(n_t, n_bins, dtype=torch.int64), "sum")
        self.add_state("conf_sum", torch.zeros(n_t, n_bins, dtype=torch.float64), "sum")
        self.add_state("correct_sum", torch.zeros(n_t, n_bins, dtype=torch.int64), "sum")
        self.add_state("nll_sum", torch.zeros(n_t, dtype=torch.float64), "sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add the batch's sums for every temperature (dense: the sampled positions only)."""
        logits = logits.detach()
        if self.validate_args:  # the whole batch, before any sampling; then never again
            _tensor_validation(logits, target, self.ignore_index, from_logits=True)
        fraction = self.fraction_for(logits.shape[-2:]) if logits.ndim > 2 else 1.0
        if fraction < 1.0:
            keep = position_sample(*logits.shape[-2:], fraction, logits.device)
            logits = logits[..., keep]  # (N, C, *lead, P): still a dense batch
            target = target[..., keep]
        temps = self.temperatures.to(logits.device)
        count, conf, correct = binned_calibration_stats(
            logits, target, self.n_bins, self.ignore_index, temperature=temps, validate_args=False
        )
        self.count = self.count + count.to(self.count)
        self.conf_sum = self.conf_sum + conf.to(self.conf_sum)
        self.correct_sum = self.correct_sum + correct.to(self.correct_sum)
        if self.criterion == "nll":
            self.nll_sum = self.nll_sum + self._nll_sums(logits, target, temps)

    def fraction_for(self, size: tuple[int, ...] | torch.Size) -> float:
        """The fraction of the positions of an image of ``size`` (``(H, W)``) scored."""
        if self.pixel_fraction is not None:
            return self.pixel_fraction
        return min(1.0, self.positions_per_image / max(1, math.prod(size)))

    def _nll_sums(self, logits: Tensor, target: Tensor, temps: Tensor) -> Tensor:
        """Summed ``-log softmax(z / T)_y`` over valid rows for every ``T``, float64."""
        rows, y = to_rows(logits, target, self.ignore_index, validate=False)
        rows = rows.double()
        out = torch.zeros(len(temps), dtype=torch.float64, device=rows.device)
        if rows.shape[0] == 0:
            return out
        target_logit = rows.gather(1, y.view(-1, 1)).squeeze(1)
        per_chunk = max(1, self.max_chunk_elements // rows.numel())
        for start in range(0, len(temps), per_chunk):
            t = temps[start : start + per_chunk].view(-1, 1, 1)
            lse = torch.logsumexp(rows.unsqueeze(0) / t, dim=-1)
            out[start : start + per_chunk] = (lse - target_logit / t.view(-1, 1)).sum(-1)
        return out

    def scores(self) -> Tensor:
        """The criterion for every temperature (ECE or mean NLL), float64."""
        if self.criterion == "nll":
            return self.nll_sum / self.count[0].sum().clamp_min(1).double()
        return ece_from_stats(self.count, self.conf_sum, self.correct_sum)

    def compute(self) -> Tensor:
        """The temperature with the lowest criterion (the smallest one on ties)."""
        if self.count[0].sum() == 0:
            return torch.ones((), dtype=torch.float32)
        return self.temperatures[torch.argmin(self.scores())].float()
