"""Pictures of a run: reliability diagrams, and per-pixel maps for dense tasks.

* :func:`plot_reliability_grid`: one reliability diagram per run (raw, with the
  temperature-scaled curve over it) in one image; the demo and :class:`TestPictures` use it.
* :func:`plot_segmentation_maps`: for a few images, the image, the target, the prediction,
  the confidence and the per-pixel calibration error ``|confidence - correct|`` (void pixels
  grey).
* :class:`TestPictures`: the callback the CLI adds to ``test``: at the end of the test epoch it
  writes both into ``<default_root_dir>/pictures/`` (never overwriting an earlier test's) and
  hands the figures to the logger when it can show images (TensorBoard's ``add_figure``).

Everything draws on ``matplotlib.figure.Figure`` with the Agg canvas: the global backend is
never touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_calib.files import free_stem

__all__ = ["TestPictures", "plot_reliability_grid", "plot_segmentation_maps"]


def _sums(curve: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` and the per-bin sums the plotting helper takes, from per-bin means."""
    count = curve["count"].double()
    conf_sum = torch.nan_to_num(count * curve["confidence"].double(), nan=0.0)
    correct_sum = torch.nan_to_num(count * curve["accuracy"].double(), nan=0.0)
    return count, conf_sum, correct_sum


def plot_reliability_grid(
    reliability: Mapping[str, Mapping[str, Mapping[str, Tensor]]],
    rows: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    ncols: int = 3,
    suptitle: str | None = None,
) -> Path:
    """Draw one reliability diagram per run into one image (Agg backend); return its path.

    Args:
        reliability: run name -> ``{"raw": ..., "ts": ...}``, each the output of
            :meth:`~lightning_calib.metrics.ECE.reliability` (``ts`` optional).
        rows: run name -> test metrics (``ece``, ``ece_ts``, ``temperature`` are read).
        path: the image to write (PNG by its suffix).
        ncols: panels per row.
        suptitle: the figure's title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lightning_calib.metrics._plot import plot_reliability_diagram

    names = list(reliability)
    ncols = max(1, min(ncols, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(4.4 * ncols, 4.4 * nrows + (0.4 if suptitle else 0.0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        curves = reliability[name]
        metrics = rows.get(name, {})
        if "raw" not in curves:
            ax.set_axis_off()
            ax.set_title(f"{name}: no reliability data")
            continue
        raw = curves["raw"]
        plot_reliability_diagram(
            raw["lower"], raw["upper"], *_sums(raw), ax=ax, title=f"{name}  ECE",
            value=metrics.get("ece"),
        )  # fmt: skip
        ts = curves.get("ts")
        if ts is not None:
            full = ts["count"] > 0
            label = "TS"
            if "temperature" in metrics:
                label += f" (T={metrics['temperature']:.2f})"
            if "ece_ts" in metrics:
                label += f", ECE {metrics['ece_ts']:.4f}"
            ax.plot(
                ts["confidence"][full].detach().cpu().double().numpy(),
                ts["accuracy"][full].detach().cpu().double().numpy(),
                marker="o", markersize=3, color="tab:green", linewidth=1.2, label=label,
            )  # fmt: skip
        ax.set_xlabel("Confidence")
        ax.legend(loc="lower right", fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def plot_segmentation_maps(
    images: Tensor,
    logits: Tensor,
    target: Tensor,
    path: str | Path,
    *,
    ignore_index: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    temperature: float = 1.0,
) -> Path:
    """Per image: input, target, prediction, confidence and calibration error; one PNG.

    Args:
        images: ``(N, 3, H, W)`` normalized inputs (undone with ``mean``/``std`` for display).
        logits: ``(N, K, H, W)``.
        target: ``(N, H, W)`` class indices, ``ignore_index`` for void.
        path: the image to write.
        ignore_index: the void label (grey in the maps).
        mean: the per-channel mean the inputs were normalized with.
        std: the per-channel std the inputs were normalized with.
        temperature: divides the logits before the softmax (the fitted ``T`` for a TS view).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images, logits, target = (t.detach().cpu().float() for t in (images, logits, target))
    n, k = logits.shape[:2]
    if mean is not None and std is not None and images.shape[1] == len(mean):
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    images = images.clamp(0, 1)
    prob = (logits / temperature).softmax(1)
    conf, pred = prob.max(1)
    void = (
        target == ignore_index
        if ignore_index is not None
        else torch.zeros_like(target, dtype=torch.bool)
    )
    error = (conf - (pred == target).float()).abs().masked_fill(void, float("nan"))
    shown_target = target.float().masked_fill(void, float("nan"))
    columns = ("image", "target", "prediction", "confidence", "|confidence - correct|")
    fig = Figure(figsize=(2.4 * len(columns), 2.4 * n))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(columns), squeeze=False)
    for i in range(n):
        panels = (
            (images[i].permute(1, 2, 0).numpy(), {}),
            (shown_target[i].numpy(), {"cmap": "tab20", "vmin": 0, "vmax": max(k - 1, 1)}),
            (pred[i].float().numpy(), {"cmap": "tab20", "vmin": 0, "vmax": max(k - 1, 1)}),
            (conf[i].numpy(), {"cmap": "viridis", "vmin": 0, "vmax": 1}),
            (error[i].numpy(), {"cmap": "magma", "vmin": 0, "vmax": 1}),
        )
        for j, (data, kwargs) in enumerate(panels):
            ax = axes[i, j]
            ax.set_facecolor("0.6")  # void pixels (NaN) show grey
            ax.imshow(data, interpolation="nearest", **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


def _free_path(folder: Path, stem: str) -> Path:
    """``folder/<stem>.png``, or the next free ``<stem>-<n>.png`` (:func:`free_stem`)."""
    return folder / f"{free_stem(folder, stem, '.png')}.png"


class TestPictures(pl.Callback):
    """Writes the test's reliability diagram and, for dense tasks, per-pixel maps.

    Into ``<default_root_dir>/pictures/``: ``reliability.png`` (raw, with the
    temperature-scaled curve) and, when the test logits are dense, ``maps.png`` for the
    first ``n_images`` test images (raw logits, and ``maps_ts.png`` after temperature
    scaling). An earlier test's pictures are kept (``reliability-1.png``, ...). The figures
    also go to the logger when it has ``experiment.add_figure`` (TensorBoard). Global rank 0
    only; the reliability data itself is reduced over every process by the module.

    Args:
        n_images: how many test images get maps.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, n_images: int = 4) -> None:
        self.n_images = n_images
        self._first: tuple[Tensor, Tensor, Tensor] | None = None
        self.paths: list[Path] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self._first = None

    def on_test_batch_end(  # noqa: D102
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self._first is not None or not trainer.is_global_zero:
            return
        x, y = batch[0], batch[1]
        if y.ndim < 2:  # classification: no maps
            self._first = (x[:0], x[:0], y[:0])
            return
        with torch.no_grad():
            logits = pl_module(x[: self.n_images])
        self._first = (x[: self.n_images].cpu(), logits.cpu(), y[: self.n_images].cpu())

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the pictures (after the module's own epoch end has kept the reliability)."""
        reliability = getattr(pl_module, "test_reliability", None) or {}
        if not trainer.is_global_zero or not reliability:
            return
        folder = Path(trainer.default_root_dir) / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        values = {k.removeprefix("test/"): float(v)
                  for k, v in getattr(pl_module, "epoch_metrics", {}).items()
                  if k.startswith("test/")}  # fmt: skip
        target = _free_path(folder, "reliability")
        self.paths = [plot_reliability_grid({"test": reliability}, {"test": values}, target)]
        if self._first is not None and self._first[1].numel():
            data = trainer.datamodule
            kwargs = {
                "ignore_index": getattr(pl_module, "ignore_index", None),
                "mean": getattr(data, "mean", None),
                "std": getattr(data, "std", None),
            }
            self.paths.append(plot_segmentation_maps(*self._first, _free_path(folder, "maps"),
                                                     **kwargs))  # fmt: skip
            temperature = float(getattr(pl_module, "temperature", torch.ones(())))
            if temperature != 1.0:
                self.paths.append(plot_segmentation_maps(
                    *self._first, _free_path(folder, "maps_ts"), temperature=temperature,
                    **kwargs,
                ))  # fmt: skip
        self._log_figures(trainer)

    def _log_figures(self, trainer: pl.Trainer) -> None:
        """Hand the written pictures to loggers that can show images."""
        for logger in trainer.loggers:
            add_image = getattr(getattr(logger, "experiment", None), "add_image", None)
            if add_image is None:
                continue
            import numpy as np
            from PIL import Image

            for path in self.paths:
                array = np.asarray(Image.open(path).convert("RGB"))
                add_image(f"test/{path.stem}", array, trainer.global_step, dataformats="HWC")
