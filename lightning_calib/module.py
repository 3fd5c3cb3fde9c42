"""The LightningModule of every task: a network, a pluggable loss, a metric preset.

One module for the task family, not one per method or per task: the network and the loss are
constructor arguments chosen in YAML by ``class_path`` (the CLI is the registry), and the metric
set is a named preset (:mod:`lightning_calib.metrics.presets`: ``"classification"``,
``"segmentation"``) or any factory. Classification ``(N, C)`` logits and dense
``(N, C, *spatial)`` logits go through the same steps, loss-part logging, temperature scaling
and checkpoint layout.

The dataset facts (``num_classes``, ``ignore_index``, ``class_names``) are declared by the
datamodule and linked in by the CLI; the module hands ``ignore_index`` to the loss, the metrics
and the temperature search, and refuses a loss or metric configured with another one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lightning_calib.metrics.presets import MetricSetFactory, check_ignore_index, get_preset
from lightning_calib.temperature import TemperatureGrid

__all__ = [
    "CalibrationModule",
    "ClassificationModule",
    "logit_statistics",
    "reconcile_ignore_index",
]

#: The ``ignore_index`` default of ``torch.nn.CrossEntropyLoss`` and of the project's losses:
#: "not configured". A loss that carries it takes the data's ``ignore_index``.
UNSET_IGNORE_INDEX = -100


def reconcile_ignore_index(loss: nn.Module, ignore_index: int | None) -> None:
    """Give ``loss`` the data's ``ignore_index``, or refuse a loss configured with another.

    A loss without an ``ignore_index`` attribute is left alone. One that carries the default
    ``-100`` (torch's and this project's: "not configured") takes ``ignore_index`` when the
    data declares one. Any other value must equal the data's; when the data declares none
    (every target is a class), a non-negative value would drop the rows of a real class and is
    refused too.

    Raises:
        ValueError: naming both values.
    """
    declared = getattr(loss, "ignore_index", None)
    if declared is None or declared == ignore_index:
        return
    name = type(loss).__name__
    if ignore_index is not None and declared == UNSET_IGNORE_INDEX:
        loss.ignore_index = ignore_index
        return
    if ignore_index is None and declared < 0:
        return  # a negative index never matches a class: nothing is dropped
    raise ValueError(
        f"the loss {name} was configured with ignore_index={declared} but the data declares "
        f"ignore_index={ignore_index}; set it once, on the datamodule (remove the loss's "
        "`ignore_index`)."
    )


@torch.no_grad()
def logit_statistics(logits: Tensor) -> dict[str, Tensor]:
    """Per-batch logit geometry that calibration losses act on (docs/REFERENCE.md).

    Returns the batch means of the mean distance to the top logit
    ``sum_k (zmax - z_k) / (K - 1)``, of the largest distance ``zmax - zmin`` and of the
    top-1 minus top-2 margin, plus the mean top logit.
    """
    z = logits.detach().float()
    if z.ndim > 2:
        z = z.movedim(1, -1).reshape(-1, z.shape[1])
    k = z.shape[1]
    top2 = z.topk(2, dim=1).values if k > 1 else torch.cat([z, z], 1)
    zmax = top2[:, 0]
    return {
        "logit_dist_mean": (zmax * k - z.sum(1)).div(max(k - 1, 1)).mean(),
        "logit_dist_max": (zmax - z.amin(1)).mean(),
        "logit_margin": (top2[:, 0] - top2[:, 1]).mean(),
        "logit_max": zmax.mean(),
    }


class CalibrationModule(pl.LightningModule):
    """Network + pluggable loss + optimizer/scheduler, with a calibration metric set per stage.

    Losses that have parts (a CE term and a regularizer) expose
    ``forward_with_parts(logits, target) -> (total, {name: part})`` (see ``losses.base``);
    the module logs each part as ``<stage>/loss_<name>`` from that one call. Any other
    ``nn.Module`` loss (e.g. ``torch.nn.CrossEntropyLoss``) is called plainly.

    Post-hoc temperature scaling is built in: during validation a grid of temperatures is
    scored on the validation logits (sum statistics, so exact under DDP); the best one is
    kept in the ``temperature`` buffer (saved in checkpoints) and logged as
    ``val/temperature``. ``test`` reports every metric raw (``test/ece``) and scaled
    (``test/ece_ts``), and keeps the reliability-diagram data of both in
    :attr:`test_reliability`.

    Args:
        network: builds the network from ``num_classes`` (a class whose first argument is
            ``num_classes``, given in YAML by ``class_path`` without it), or a built module.
            Dense tasks return ``(N, num_classes, *spatial)`` at the target's size.
        num_classes: number of classes; linked from the datamodule by the CLI.
        loss: the training loss; default ``torch.nn.CrossEntropyLoss``. Its ``ignore_index``
            comes from the data (see :func:`reconcile_ignore_index`).
        metrics: the metric set: a preset name (``"classification"``, ``"segmentation"``), an
            import path ``"package.module.function"`` or a callable, called as
            ``factory(num_classes, n_bins, ignore_index)`` and returning a
            ``MetricCollection`` (keys without prefix; the module clones it per stage).
        optimizer: builds the optimizer from the parameters.
        scheduler: builds the LR scheduler from the optimizer, or ``None``.
        scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
        n_bins: bins of the binned calibration metrics.
        ignore_index: target value of the void rows/pixels (``None``: every target is a class);
            linked from the datamodule by the CLI and handed to loss, metrics and the
            temperature search.
        class_names: the class names (for reports), linked from the datamodule.
        temperature_grid: ``(start, stop, step)`` of the temperature search (inclusive), or
            ``None`` to switch temperature scaling off.
        temperature_criterion: ``"ece"`` (the public ACLS code: lowest validation ECE) or
            ``"nll"`` (lowest validation NLL).
        temperature_pixel_fraction: dense tasks: the fraction of pixel positions the
            temperature search scores (a fixed, position-keyed subset: the same ``T`` on 1 or
            N processes; see :mod:`lightning_calib.temperature`). ``1.0`` scores every pixel;
            ``None`` (default) about 1,024 positions per image, ``min(1, 1024 / (H W))``.
        log_logit_stats: log the per-batch logit geometry during training, on the steps the
            trainer writes logs (every ``log_every_n_steps``), so it costs nothing in between.

    Raises:
        ValueError: bad arguments; a network built for another class count; a loss or metric
            configured with an ``ignore_index`` other than the data's.
    """

    def __init__(
        self,
        network: Callable[[int], nn.Module],
        num_classes: int,
        loss: nn.Module | None = None,
        metrics: str | MetricSetFactory = "classification",
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        n_bins: int = 15,
        ignore_index: int | None = None,
        class_names: Sequence[str] | None = None,
        temperature_grid: tuple[float, float, float] | None = (0.1, 10.0, 0.1),
        temperature_criterion: str = "ece",
        temperature_pixel_fraction: float | None = None,
        log_logit_stats: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2; got {num_classes}.")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"`scheduler_interval` must be 'epoch' or 'step'; got {scheduler_interval!r}."
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` must name num_classes={num_classes} classes; got "
                f"{len(class_names)}."
            )
        # Under the CLI the hyperparameters are the config (class_path dicts), which load back
        # through `load_from_checkpoint`; module objects passed from Python are not picklable
        # safely, so those are left out (pass them again to `load_from_checkpoint`).
        with warnings.catch_warnings():  # the nn.Module advice; handled just below
            warnings.filterwarnings("ignore", message=r".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        for key in ("network", "loss", "optimizer", "scheduler", "metrics"):
            if key in self.hparams and not _is_plain(self.hparams[key]):
                del self.hparams[key]
        self.num_classes = num_classes
        self.class_names = None if class_names is None else tuple(class_names)
        self.network = network if isinstance(network, nn.Module) else network(num_classes)
        declared = getattr(self.network, "num_classes", None)
        if isinstance(declared, int) and declared != num_classes:
            raise ValueError(
                f"the network was built for num_classes={declared} but the data has "
                f"num_classes={num_classes}."
            )
        if loss is None:
            loss = nn.CrossEntropyLoss()
        reconcile_ignore_index(loss, ignore_index)
        self.loss = loss
        self.optimizer_fn = optimizer
        self.scheduler_fn = scheduler
        self.scheduler_interval = scheduler_interval
        self.ignore_index = ignore_index
        self.log_logit_stats = log_logit_stats
        self.register_buffer("temperature", torch.ones(()))
        self.on_train_epoch_start()  # the running sums of the training-loss logs
        factory = get_preset(metrics) if isinstance(metrics, str) else metrics
        collection = factory(num_classes, n_bins, ignore_index)
        if not isinstance(collection, MetricCollection):
            raise ValueError(
                f"`metrics` must build a torchmetrics MetricCollection; {metrics!r} returned "
                f"{type(collection).__name__}."
            )
        check_ignore_index(dict(collection.items(keep_base=True)), ignore_index)
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.test_metrics_ts = collection.clone(prefix="test/", postfix="_ts")
        #: After ``test``: ``{"raw": ..., "ts": ...}`` reliability data of the ``ece`` metric
        #: (bin edges, counts, mean confidence and accuracy per bin), when the set has one.
        self.test_reliability: dict[str, dict[str, Tensor]] = {}
        #: The pooled metric values of the last validation / test epoch, float64, by key.
        self.epoch_metrics: dict[str, Tensor] = {}
        self.temperature_search = (
            None
            if temperature_grid is None
            else TemperatureGrid(
                temperature_grid,
                n_bins,
                temperature_criterion,
                ignore_index=ignore_index,
                validate_args=False,  # the metric set checks the same batch first
                pixel_fraction=temperature_pixel_fraction,
            )
        )

    # ----------------------------------------------------------------------------- steps
    def forward(self, x: Tensor) -> Tensor:
        """Logits of the network (not temperature-scaled)."""
        return self.network(x)

    def _check_logits(self, logits: Tensor, target: Tensor) -> None:
        if logits.ndim < 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"the network returned logits of shape {tuple(logits.shape)}; expected "
                f"(batch, {self.num_classes}, ...) for num_classes={self.num_classes} "
                "(does the network's output size match the datamodule?)"
            )
        if tuple(logits.shape[2:]) != tuple(target.shape[1:]):
            raise ValueError(
                f"the network returned logits of shape {tuple(logits.shape)} for a target of "
                f"shape {tuple(target.shape)}; a dense network must return "
                f"(batch, {self.num_classes}, *target spatial size) (upsample to the input)."
            )

    def _loss(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with_parts = getattr(self.loss, "forward_with_parts", None)
        if with_parts is not None:
            return with_parts(logits, target)
        return self.loss(logits, target), {}

    def _log_loss(self, stage: str, loss: Tensor, parts: dict[str, Tensor], n: int) -> None:
        """Validation: per-epoch means, synced across processes."""
        self.log(f"{stage}/loss", loss.detach(), on_epoch=True, batch_size=n, sync_dist=True)
        for name, value in parts.items():
            self.log(f"{stage}/loss_{name}", value.detach(), on_epoch=True, batch_size=n,
                     sync_dist=True)  # fmt: skip

    def _log_train_loss(self, loss: Tensor, parts: dict[str, Tensor], n: int) -> None:
        """Training: step values on logging steps; epoch means kept as running sums.

        ``self.log`` costs a fraction of a millisecond per call; on a small network that is a
        visible share of a step, so the epoch means are accumulated with one tensor op per
        step and logged once at the epoch end (``train/loss_epoch``, ``train/loss_ce_epoch``).
        """
        names = ["loss", *(f"loss_{k}" for k in parts)]
        values = torch.stack([loss.detach(), *(v.detach() for v in parts.values())]).float()
        if self._train_sums is None or self._train_sums.shape != values.shape:
            self._train_names, self._train_sums, self._train_count = names, values * n, n
        else:
            self._train_sums = self._train_sums + values * n
            self._train_count += n
        if self._is_logging_step():
            step = {f"train/{k}_step": v for k, v in zip(names, values)}
            self.log_dict(step, on_step=True, on_epoch=False, batch_size=n)
            self.log("train/loss", values[0], on_step=True, on_epoch=False, prog_bar=True,
                     logger=False, batch_size=n)  # fmt: skip

    def on_train_epoch_start(self) -> None:  # noqa: D102
        self._train_names: list[str] = []
        self._train_sums: Tensor | None = None
        self._train_count = 0

    def on_train_epoch_end(self) -> None:  # noqa: D102
        if self._train_sums is None or self._train_count == 0:
            return
        means = self._train_sums / self._train_count
        epoch = {f"train/{k}_epoch": v for k, v in zip(self._train_names, means)}
        self.log_dict(epoch, on_step=False, on_epoch=True, sync_dist=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:  # noqa: D102
        x, y = batch
        logits = self(x)
        if batch_idx == 0:
            self._check_logits(logits, y)
        loss, parts = self._loss(logits, y)
        self._log_train_loss(loss, parts, len(y))
        if self.log_logit_stats and self._is_logging_step():
            stats = {f"train/{k}": v for k, v in logit_statistics(logits).items()}
            self.log_dict(stats, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def _is_logging_step(self) -> bool:
        """Whether the trainer writes step logs now (every ``log_every_n_steps``)."""
        trainer = self._trainer
        if trainer is None:
            return True
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
        return trainer.global_step % every == 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:  # noqa: D102
        x, y = batch
        logits = self(x)
        if batch_idx == 0:
            self._check_logits(logits, y)
        loss, parts = self._loss(logits, y)
        self._log_loss("val", loss, parts, len(y))
        self.val_metrics.update(logits, y)
        if self.temperature_search is not None:
            self.temperature_search.update(logits, y)

    def _log_metric_set(self, metrics: MetricCollection) -> None:
        """Compute the pooled values (synced across processes), keep and log them, reset.

        Logged once per epoch, not per step: logging the Metric objects at every step costs
        Lightning ~0.4 ms per metric and step (measured: half of a batch-size-1 evaluation),
        and the values are pooled over the epoch anyway. The float64 values are kept in
        :attr:`epoch_metrics` (Lightning's own log holds them as float32).
        """
        values = metrics.compute()
        metrics.reset()
        self.epoch_metrics.update({k: v.detach().cpu() for k, v in values.items()})
        self.log_dict(values, sync_dist=False)  # already reduced over processes

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        self.epoch_metrics = {k: v for k, v in self.epoch_metrics.items() if "val/" not in k}

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._log_metric_set(self.val_metrics)
        if self.temperature_search is None:
            return
        if not self.trainer.sanity_checking:  # the sanity pass logs the key, fits nothing
            self.temperature.fill_(self.temperature_search.compute())
            self.epoch_metrics["val/temperature"] = self.temperature.detach().cpu().clone()
        self.log("val/temperature", self.temperature.clone(), sync_dist=False)
        self.temperature_search.reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:  # noqa: D102
        x, y = batch
        logits = self(x)
        if batch_idx == 0:
            self._check_logits(logits, y)
        self.test_metrics.update(logits, y)
        if self.temperature_search is not None:
            self.test_metrics_ts.update(logits / self.temperature, y)

    def on_test_epoch_start(self) -> None:  # noqa: D102
        self.epoch_metrics = {k: v for k, v in self.epoch_metrics.items() if "test/" not in k}

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self.test_reliability = {}
        for kind, collection in (("raw", self.test_metrics), ("ts", self.test_metrics_ts)):
            ece = collection["ece"] if "ece" in collection else None
            if kind == "ts" and self.temperature_search is None:
                continue
            if ece is not None and hasattr(ece, "reliability"):
                self.test_reliability[kind] = ece.reliability()
        self._log_metric_set(self.test_metrics)
        if self.temperature_search is not None:
            self._log_metric_set(self.test_metrics_ts)
            self.epoch_metrics["test/temperature"] = self.temperature.detach().cpu().clone()
            self.log("test/temperature", self.temperature.clone())

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Raw and temperature-scaled logits, with the targets when the batch has them."""
        x, y = batch if isinstance(batch, list | tuple) else (batch, None)
        logits = self(x)
        out = {"logits": logits, "logits_ts": logits / self.temperature}
        if y is not None:
            out["target"] = y
        return out

    # ------------------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> Any:  # noqa: D102
        optimizer = self.optimizer_fn(self.parameters())
        if self.scheduler_fn is None:
            return optimizer
        scheduler = self.scheduler_fn(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }


#: The name the module had when it served classification only (kept for scripts and notebooks).
ClassificationModule = CalibrationModule


def _is_plain(value: Any) -> bool:
    """Whether a hyperparameter is plain config data (what the CLI records)."""
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False
