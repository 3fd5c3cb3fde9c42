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
        f"--trainer.max_epochs={epochs}",
        f"--trainer.limit_train_batches={batches}",
        f"--trainer.limit_val_batches={batches}",
        f"--trainer.limit_test_batches={batches}",
        "--model.network.init_args.width=4",
    ]


# --- the two implementations of ACLS/MbLS --------------------------------------------------------

MARGIN_KERNELS = ("native", "eager")


def use_margin_kernel(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ACLS/MbLS run on one implementation only, so that a test cannot pass on the other.

    ``native``: the C kernel of :mod:`losses._native` (it must build: a failure is a test
    failure, not a silent fallback) and the eager code made to raise. ``eager``: the PyTorch
    code of :mod:`losses._fused`, the kernel switched off.
    """
    import losses._fused as fused
    import losses._native as native

    if kind == "native":
        assert native.library() is not None, "the C kernel did not build (see the warning)"
        monkeypatch.setattr(native, "_enabled", True)

        def refuse(*args, **kwargs):
            raise AssertionError("the eager margin code ran where the C kernel should have")

        monkeypatch.setattr(fused, "_run_blocks", refuse)
    elif kind == "eager":
        monkeypatch.setattr(native, "_enabled", False)
    else:
        raise ValueError(f"unknown margin kernel {kind!r}")


@pytest.fixture(params=MARGIN_KERNELS)
def margin_kernel(request, monkeypatch) -> str:
    """Run the test once on each implementation of ACLS/MbLS."""
    use_margin_kernel(request.param, monkeypatch)
    return request.param


# --- every public loss, each margin loss on both implementations ------------------------------


def public_losses() -> list[type]:
    """The concrete loss classes of ``losses.__all__`` (a new export is tested automatically)."""
    import inspect

    import losses

    return [
        cls
        for name in losses.__all__
        if inspect.isclass(cls := getattr(losses, name))
        and issubclass(cls, losses.CalibrationLoss)
        and not inspect.isabstract(cls)
    ]


def loss_kernel_cases() -> list:
    """``pytest.param(cls, kernel)`` per public loss; ACLS and MbLS once per implementation."""
    import losses

    return [
        pytest.param(cls, kernel, id=f"{cls.__name__}-{kernel}" if kernel else cls.__name__)
        for cls in public_losses()
        for kernel in (MARGIN_KERNELS if cls in (losses.ACLS, losses.MbLS) else (None,))
    ]


def use_kernel(kernel: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`use_margin_kernel` for a margin-loss case; nothing for the other losses."""
    if kernel is not None:
        use_margin_kernel(kernel, monkeypatch)
