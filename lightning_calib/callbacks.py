"""Callbacks the CLI adds to runs: the random generators in checkpoints, the predictions file."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from lightning_calib.files import free_stem, write_atomic

__all__ = ["MonitorCheck", "PredictionWriter", "RNGState"]


def _numpy_state() -> tuple[str, torch.Tensor, int, int, float]:
    """NumPy's global state with plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (the global one)
    return (
        str(kind),
        torch.from_numpy(keys.astype(np.int64)),
        int(pos),
        int(has_gauss),
        float(gauss),
    )


class RNGState(pl.Callback):
    """Saves the random number generators in every checkpoint and restores them on resume.

    Lightning's checkpoints hold the model, optimizer, scheduler and loop counters, but not the
    Python, NumPy and torch (CPU and CUDA) generator states, so a resumed run shuffles and
    augments differently from the run it continues. With this callback, resuming from
    ``last.ckpt`` continues the same random streams: the shuffle order of the next epoch,
    the data-loader worker seeds and the augmentations drawn in the main process are those
    the uninterrupted run would have drawn, and the resumed run ends with the same weights.
    """

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": _numpy_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        state = (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
        np.random.set_state(state)  # noqa: NPY002 (the global generator is what runs use)
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class PredictionWriter(BasePredictionWriter):
    """Writes the outputs of ``predict`` to one file in the run folder and says where.

    At the end of the predict epoch the per-batch outputs of
    :meth:`~lightning_calib.module.CalibrationModule.predict_step` (``{"logits", "logits_ts",
    "target"?}``) are concatenated along dim 0, key by key (dense ``(B, K, *spatial)`` outputs
    too), and saved with :func:`torch.save` as one dict of CPU tensors (loadable with
    ``torch.load(..., weights_only=True)``):

    - ``logits``, ``logits_ts`` (``logits / temperature``) and ``target`` when the batches had
      one;
    - ``temperature``: the module's temperature buffer, when it has one;
    - ``batch_indices``: ``(N,)`` int64, the dataset index of each row (from Lightning's
      sampler wrapper; absent when the loader gives none).

    Outputs whose shapes differ beyond dim 0 from one batch to the next (dense inputs of
    varying size) cannot be concatenated; that key then holds the list of per-batch tensors.

    **File name.** ``<output_dir>/predictions.pt``. An existing file is never overwritten: the
    first free name of ``predictions-1.pt``, ``predictions-2.pt``, ... is taken instead, and
    the message says so. The file is written to a temporary file in the same folder and moved
    into place with :func:`os.replace`, so a reader never sees a partial file. On global rank 0
    one line ``predictions written to <path> (N rows)`` is printed (through the progress bar
    when one is shown, so the bar is not broken).

    **DDP.** Each rank writes the rows it predicted to its own file,
    ``predictions.rank<r>.pt`` (no gather: a rank never holds the other ranks' logits, which
    for segmentation can be large); rank 0 picks the free name for all ranks and prints one
    line naming ``predictions.rank*.pt`` with the total row count. Merge the files by
    ``batch_indices``: a ``DistributedSampler`` pads the ranks to equal length by repeating a
    few dataset indices, which then appear twice. With several predict dataloaders, each gets
    its own file, ``predictions.dataloader<i>.pt`` (``.dataloader<i>.rank<r>.pt`` under DDP).

    Lightning keeps the epoch's outputs on the CPU until this callback writes them (the
    ``write_interval="epoch"`` contract), so the predictions must fit in host memory.

    Args:
        output_dir: the folder; ``None`` for ``trainer.default_root_dir`` (the run folder).
        filename: the file name, without folder; numbered as above when taken.

    Raises:
        ValueError: ``filename`` names a folder, or is empty.
    """

    def __init__(
        self, output_dir: str | os.PathLike | None = None, filename: str = "predictions.pt"
    ):
        super().__init__(write_interval="epoch")
        if not filename or Path(filename).name != filename or filename in (".", ".."):
            raise ValueError(f"`filename` must be a file name without folder; got {filename!r}.")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.filename = filename
        #: The files written by the last predict epoch.
        self.paths: list[Path] = []

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Concatenate the epoch's outputs and write them (see the class docstring)."""
        temperature = getattr(pl_module, "temperature", None)
        payloads, rows = [], 0
        for i, outputs in enumerate(_per_dataloader(predictions)):
            payload = _concatenate(outputs)
            n = _rows(next(iter(payload.values()), None))
            rows += n
            if isinstance(temperature, torch.Tensor):
                payload["temperature"] = temperature.detach().cpu().clone()
            indices = [int(j) for batch in _loader_indices(batch_indices, i) for j in batch]
            if indices and len(indices) == n:
                payload["batch_indices"] = torch.tensor(indices, dtype=torch.int64)
            payloads.append(payload)

        folder = Path(self.output_dir or trainer.default_root_dir)
        stem, ext = _split(self.filename)
        several, world = len(payloads) > 1, trainer.world_size
        base = None
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            base = free_stem(folder, stem, ext)
        base = trainer.strategy.broadcast(base, src=0)  # every rank writes under one name
        folder.mkdir(parents=True, exist_ok=True)
        rank = f".rank{trainer.global_rank}" if world > 1 else ""
        self.paths = []
        for i, payload in enumerate(payloads):
            path = folder / (base + (f".dataloader{i}" if several else "") + rank + ext)
            write_atomic(path, lambda file, payload=payload: torch.save(payload, file))
            self.paths.append(path)
        if world > 1:  # the total over the ranks; also waits until every rank has written
            total = torch.tensor(rows, dtype=torch.int64, device=pl_module.device)
            rows = int(trainer.strategy.reduce(total, reduce_op="sum").item())

        if trainer.is_global_zero:
            pattern = (".dataloader*" if several else "") + (".rank*" if world > 1 else "")
            line = f"predictions written to {folder / (base + pattern + ext)} ({rows} rows)"
            if base != stem:
                line += f"; {self.filename} was taken in that folder, nothing was overwritten"
            _say(trainer, line)


def _per_dataloader(predictions: Sequence[Any]) -> list[list[Any]]:
    """The outputs as ``dataloaders x batches`` (Lightning unnests them for one dataloader)."""
    if predictions and all(isinstance(p, list) for p in predictions):
        return [list(p) for p in predictions]
    return [list(predictions)]


def _loader_indices(batch_indices: Sequence[Any], i: int) -> list[Sequence[int]]:
    """Dataloader ``i``'s ``batches x samples`` indices (Lightning nests them per dataloader)."""
    if not batch_indices or i >= len(batch_indices) or not isinstance(batch_indices[i], list):
        return []
    return batch_indices[i]


def _concatenate(outputs: list[Any]) -> dict[str, Any]:
    """``{key: tensor}`` per batch -> ``{key: tensor}`` along dim 0, on the CPU."""
    if not outputs:
        return {}
    for out in outputs:
        if not isinstance(out, dict) or not all(isinstance(v, torch.Tensor) for v in out.values()):
            raise TypeError(
                "PredictionWriter expects predict_step to return a dict of tensors per batch; "
                f"got {type(out).__name__}."
            )
    keys = list(outputs[0])
    for n, out in enumerate(outputs):
        if list(out) != keys:
            raise ValueError(
                f"predict_step returned keys {sorted(out)} for batch {n} but {sorted(keys)} for "
                "batch 0; every batch must return the same keys."
            )
    merged: dict[str, Any] = {}
    for key in keys:
        parts = [out[key].detach().cpu() for out in outputs]
        if all(p.ndim >= 1 and p.shape[1:] == parts[0].shape[1:] for p in parts):
            merged[key] = torch.cat(parts)
        else:
            merged[key] = parts
    return merged


def _rows(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.shape[0] if value.ndim else 1
    if isinstance(value, list):
        return sum(_rows(v) for v in value)
    return 0


def _split(filename: str) -> tuple[str, str]:
    """``"predictions.pt"`` -> ``("predictions", ".pt")``."""
    path = Path(filename)
    return (path.stem, path.suffix) if path.suffix else (filename, "")


def _say(trainer: pl.Trainer, line: str) -> None:
    """Print one line; through the progress bar when one is shown (it keeps the bar intact)."""
    bar = trainer.progress_bar_callback
    if bar is not None and bar.is_enabled:
        bar.print(line)
    else:
        print(line, flush=True)


class MonitorCheck(pl.Callback):
    """Refuses, right after the sanity validation, a monitored key that is never logged.

    Lightning finds out that ``ModelCheckpoint(monitor=...)`` names a key nothing logs only when
    it first tries to save, after a whole training epoch. The keys logged by the sanity
    validation are known before the first training step, so the check is made there: a
    monitor that is not among them is an error naming it and the keys that are logged.
    (Without a sanity validation, ``num_sanity_val_steps=0``, Lightning's own check remains.)
    """

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compare every monitored key with the keys the sanity validation logged."""
        logged = set(trainer.callback_metrics)
        if not logged:
            return
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if not monitor or not monitor.startswith("val/") or monitor in logged:
                continue
            known = ", ".join(sorted(k for k in logged if k.startswith("val/")))
            raise ValueError(
                f"{type(callback).__name__} monitors {monitor!r}, which is never logged; the "
                f"validation logs {known} (set checkpoint.monitor to one of them)"
            )
