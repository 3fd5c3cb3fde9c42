"""Post-hoc temperature scaling, searched on a grid with sum statistics.

For every temperature ``T`` of the grid the metric keeps the equal-width reliability sums
(per-bin count, confidence sum, correct count) and the summed NLL of ``softmax(z / T)``.
These are sums, so they reduce exactly across processes, and the chosen ``T`` is the same on
1 or N GPUs. Dividing logits by ``T > 0`` never changes the arg-max, so accuracy is
unchanged and only the confidences move.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_calib.metrics.functional import binned_calibration_stats, ece_from_stats
from lightning_calib.rows import to_rows

__all__ = ["TemperatureGrid", "temperature_values"]


def temperature_values(grid: tuple[float, float, float]) -> Tensor:
    """The temperatures ``start, start + step, ..., stop`` (inclusive) as float64."""
    start, stop, step = (float(v) for v in grid)
    if not (start > 0 and stop >= start and step > 0):
        raise ValueError(
            "`temperature_grid` must be (start, stop, step) with 0 < start <= stop and step > 0;"
            f" got {tuple(grid)}."
        )
    n = int(round((stop - start) / step)) + 1
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
    ) -> None:
        super().__init__()
        if criterion not in ("ece", "nll"):
            raise ValueError(f"`criterion` must be 'ece' or 'nll'; got {criterion!r}.")
        self.temperatures: Tensor
        self.register_buffer("temperatures", temperature_values(grid), persistent=False)
        self.n_bins = n_bins
        self.criterion = criterion
        self.ignore_index = ignore_index
        self.max_chunk_elements = max_chunk_elements
        n_t = len(self.temperatures)
        for name in ("count", "conf_sum", "correct_sum"):
            self.add_state(name, torch.zeros(n_t, n_bins, dtype=torch.float64), "sum")
        self.add_state("nll_sum", torch.zeros(n_t, dtype=torch.float64), "sum")

    def update(self, logits: Tensor, target: Tensor) -> None:  # noqa: D102
        rows, y = to_rows(logits.detach(), target, self.ignore_index, preds_name="logits")
        if rows.shape[0] == 0:
            return
        rows = rows.float()
        per_chunk = max(1, self.max_chunk_elements // max(rows.numel(), 1))
        temps = self.temperatures.to(rows.device)
        count, conf, corr, nll = [], [], [], []
        for t in temps.split(per_chunk):
            scaled = rows.unsqueeze(0) / t.float().view(-1, 1, 1)
            stats = binned_calibration_stats(scaled, y, self.n_bins)
            count.append(stats[0])
            conf.append(stats[1])
            corr.append(stats[2])
            lse = torch.logsumexp(scaled, dim=-1)
            target_logit = scaled.gather(-1, y.view(1, -1, 1).expand(len(t), -1, 1)).squeeze(-1)
            nll.append((lse - target_logit).double().sum(-1))
        self.count = self.count + torch.cat(count)
        self.conf_sum = self.conf_sum + torch.cat(conf)
        self.correct_sum = self.correct_sum + torch.cat(corr)
        self.nll_sum = self.nll_sum + torch.cat(nll)

    def scores(self) -> Tensor:
        """The criterion for every temperature (ECE or mean NLL), float64."""
        if self.criterion == "nll":
            return self.nll_sum / self.count[0].sum().clamp_min(1)
        return ece_from_stats(self.count, self.conf_sum, self.correct_sum)

    def compute(self) -> Tensor:
        """The temperature with the lowest criterion (the smallest one on ties)."""
        if self.count[0].sum() == 0:
            return torch.ones((), dtype=torch.float32)
        return self.temperatures[torch.argmin(self.scores())].float()
