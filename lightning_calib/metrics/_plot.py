"""Reliability diagrams drawn from the binned states of the calibration metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor


def plot_reliability_diagram(
    lower: Tensor,
    upper: Tensor,
    count: Tensor,
    conf_sum: Tensor,
    correct_sum: Tensor,
    *,
    ax: Any = None,
    title: str | None = None,
    value: float | None = None,
) -> tuple[Any, Any]:
    """Draw accuracy against confidence per bin, the gap to the diagonal, and a histogram.

    Args:
        lower: lower edge of each bin.
        upper: upper edge of each bin.
        count: rows per bin.
        conf_sum: confidence sum per bin.
        correct_sum: correct rows per bin.
        ax: ``None`` for a new figure with two panels (reliability above, the fraction of rows
            per bin below); or one ``Axes`` to draw the reliability diagram on, the histogram
            then going into an inset at its upper left.
        title: panel title (the metric name).
        value: the metric value, shown in the title.

    Returns:
        ``(fig, ax)``: with ``ax=None``, ``ax`` is the array ``[reliability_ax, histogram_ax]``;
        otherwise the ``Axes`` given. In the reliability panel the bar containers are labelled
        ``"Accuracy"`` and ``"Gap"`` (one bar per non-empty bin); in the histogram panel
        ``"Rows"`` (one bar per bin).
    """
    import matplotlib.pyplot as plt

    lo = lower.detach().cpu().double().numpy()
    hi = upper.detach().cpu().double().numpy()
    n = count.detach().cpu().double().numpy()
    conf_s = conf_sum.detach().cpu().double().numpy()
    cor_s = correct_sum.detach().cpu().double().numpy()
    full = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = cor_s / n
        conf = conf_s / n
    total = n.sum()

    if ax is None:
        fig, axes = plt.subplots(
            2, 1, sharex=True, figsize=(5.0, 6.0), gridspec_kw={"height_ratios": [3, 1]}
        )
        rel_ax, hist_ax = axes
        returned = axes
    else:
        rel_ax = ax
        fig = ax.figure
        # inside the axes, clear of its tick labels and of the legend at the lower right
        hist_ax = ax.inset_axes([0.2, 0.6, 0.36, 0.3])
        hist_ax.tick_params(labelsize=7)
        returned = ax

    width = hi - lo
    rel_ax.bar(
        lo[full],
        acc[full],
        width=width[full],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.6,
        label="Accuracy",
    )
    rel_ax.bar(
        lo[full],
        conf[full] - acc[full],
        bottom=acc[full],
        width=width[full],
        align="edge",
        color="tab:red",
        alpha=0.35,
        edgecolor="tab:red",
        hatch="//",
        label="Gap",
    )
    rel_ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="Perfect calibration")
    rel_ax.set_xlim(0.0, 1.0)
    rel_ax.set_ylim(0.0, 1.0)
    rel_ax.set_ylabel("Accuracy")
    rel_ax.legend(loc="lower right")
    heading = title or "Reliability diagram"
    if value is not None:
        heading = f"{heading} = {value:.4f}"
    rel_ax.set_title(heading)

    frac = n / total if total > 0 else n
    hist_ax.bar(lo, frac, width=width, align="edge", color="gray", edgecolor="black", label="Rows")
    hist_ax.set_xlim(0.0, 1.0)
    hist_ax.set_ylabel("Fraction")
    hist_ax.set_xlabel("Confidence")
    return fig, returned
