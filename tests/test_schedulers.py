"""WarmupCosineLR against its closed form, torch's cosine, and a resume."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lightning_calib.schedulers import WarmupCosineLR


def _opt(*lrs: float) -> torch.optim.Optimizer:
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _run(sched: WarmupCosineLR, n: int) -> list[list[float]]:
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        sched.step()
    return out


def _expected(base: float, t: int, warmup: int, total: int, start: float, eta_min: float) -> float:
    if t < warmup:
        return base * (start + (1 - start) * t / warmup)
    progress = min(t - warmup, total - warmup) / (total - warmup)
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize(
    ("warmup", "total", "start", "eta_min"),
    [(1, 200, 0.01, 0.0), (5, 20, 0.1, 1e-5), (3, 4, 1.0, 0.0), (0, 10, 0.5, 0.001)],
)
def test_matches_closed_form(warmup: int, total: int, start: float, eta_min: float) -> None:
    sched = WarmupCosineLR(
        _opt(5e-4, 0.1), warmup, total, warmup_start_factor=start, eta_min=eta_min
    )
    lrs = _run(sched, total + 3)
    for t, (a, b) in enumerate(lrs):
        assert a == pytest.approx(_expected(5e-4, t, warmup, total, start, eta_min), abs=1e-12)
        assert b == pytest.approx(_expected(0.1, t, warmup, total, start, eta_min), abs=1e-12)
    assert lrs[-1][1] == pytest.approx(eta_min)  # stays at eta_min past max_epochs


def test_imagenet_recipe_values() -> None:
    lrs = [lr for (lr,) in _run(WarmupCosineLR(_opt(5e-4), 1, 200, 0.01), 201)]
    assert lrs[0] == pytest.approx(5e-6)
    assert lrs[1] == pytest.approx(5e-4)  # peak right after the warm-up epoch
    assert lrs[100] == pytest.approx(5e-4 * (1 + math.cos(math.pi * 99 / 199)) / 2)
    assert lrs[199] == pytest.approx(5e-4 * (1 + math.cos(math.pi * 198 / 199)) / 2)
    assert lrs[200] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_without_warmup_equals_torch_cosine() -> None:
    ours = _run(WarmupCosineLR(_opt(0.1), 0, 12, eta_min=0.01), 12)
    opt = _opt(0.1)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12, eta_min=0.01)
    theirs = []
    for _ in range(12):
        theirs.append([opt.param_groups[0]["lr"]])
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert a[0] == pytest.approx(b[0], abs=1e-12)


def test_resume_from_state_dict_is_exact() -> None:
    full = _run(WarmupCosineLR(_opt(1.0), 2, 10, 0.1), 10)
    opt = _opt(1.0)
    first = WarmupCosineLR(opt, 2, 10, 0.1)
    _run(first, 4)
    state_opt, state_sched = opt.state_dict(), first.state_dict()
    opt2 = _opt(1.0)  # the order Lightning restores in: build both, then load both
    resumed = WarmupCosineLR(opt2, 2, 10, 0.1)
    opt2.load_state_dict(state_opt)
    resumed.load_state_dict(state_sched)
    assert [lr for (lr,) in _run(resumed, 6)] == pytest.approx([lr for (lr,) in full[4:]])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup_epochs": 5, "max_epochs": 5},
        {"warmup_epochs": -1, "max_epochs": 5},
        {"warmup_epochs": 1, "max_epochs": 5, "warmup_start_factor": 0.0},
        {"warmup_epochs": 1, "max_epochs": 5, "warmup_start_factor": 1.5},
        {"warmup_epochs": 1, "max_epochs": 5, "eta_min": -1.0},
    ],
)
def test_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        WarmupCosineLR(_opt(0.1), **kwargs)
