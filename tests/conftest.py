"""Shared test set-up: offline environment, small helpers."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture
def repo_root() -> Path:
    return REPO


def tiny_trainer_args(root: Path, epochs: int = 1, batches: int = 2) -> list[str]:
    """CLI overrides that make a digits run take a couple of seconds."""
    return [
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.limit_train_batches={batches}",
        f"--trainer.limit_val_batches={batches}",
        f"--trainer.limit_test_batches={batches}",
        "--model.network.init_args.width=4",
    ]
