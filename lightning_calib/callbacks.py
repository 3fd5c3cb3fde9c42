"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

__all__ = ["RNGState"]


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
