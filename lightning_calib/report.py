"""The report of a ``test`` run: every test metric, raw and scaled, with what produced it.

``lightning-calib test`` writes ``<default_root_dir>/report.json`` (``report-1.json``, ... when
an earlier test's report is there: nothing is overwritten) holding:

* ``metrics``: every pooled test metric in float64 (``ece``, ``ece_ts``, ..., ``temperature``);
* ``temperature``: the fitted ``T``;
* ``checkpoint``: the checkpoint file tested;
* ``config``: the composed config of the command (what ``--print_config`` shows);
* ``data``: the datamodule's class, dataset facts and split sizes;
* ``pictures``: the reliability diagram (and maps) the test wrote (absolute paths);
* ``reliability``: the data of those diagrams, ``{"raw": ..., "ts": ...}``, each with the bin
  edges ``lower`` / ``upper``, ``count``, mean ``confidence`` and ``accuracy`` per bin (NaN
  for empty bins as ``null``), when the metric set has an ``ece``;
* ``version`` and ``git_commit``: the package version and the commit of the checkout (when
  it is a git checkout), and ``created`` (UTC).
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightning_calib.files import free_stem, write_atomic

__all__ = ["REPORT_NAME", "build_report", "write_report"]

REPORT_NAME = "report.json"


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightning-calib")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return None


def _size(dataset: Dataset | None) -> int | None:
    try:
        return None if dataset is None else len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


def build_report(
    model: Any, datamodule: Any, config: dict[str, Any], checkpoint: str | None
) -> dict[str, Any]:
    """The report of a finished test as a JSON-ready dict (see the module docstring)."""
    metrics = {
        key.removeprefix("test/"): float(value)
        for key, value in getattr(model, "epoch_metrics", {}).items()
        if key.startswith("test/")
    }
    data = {
        "class": type(datamodule).__qualname__ if datamodule is not None else None,
        "num_classes": getattr(datamodule, "num_classes", None),
        "ignore_index": getattr(datamodule, "ignore_index", None),
        "class_names": list(getattr(datamodule, "class_names", None) or []) or None,
        "sizes": {
            split: _size(getattr(datamodule, f"{split}_set", None))
            for split in ("train", "val", "test")
        },
    }
    reliability = {
        kind: {key: [None if v != v else v for v in value.tolist()] for key, value in data.items()}
        for kind, data in (getattr(model, "test_reliability", None) or {}).items()
    }
    return {
        "metrics": metrics,
        "reliability": reliability,
        "temperature": metrics.get("temperature"),
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
        "config": config,
        "data": data,
        "version": _version(),
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_report(report: dict[str, Any], folder: str | Path) -> Path:
    """Write ``report`` to ``folder/report.json`` (or the next free ``report-N.json``)."""
    path = Path(folder) / f"{free_stem(folder, 'report', '.json')}.json"
    text = (json.dumps(report, indent=2, default=str) + "\n").encode()
    return write_atomic(path, lambda file: file.write(text))
