"""Implicit soft targets of the losses: autograd against the closed forms of docs/REFERENCE.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_calib.analysis import (
    closed_form_target,
    distance_grid,
    equilibrium_distance,
    implicit_target,
    per_row_gradient,
    top_grid,
)
from losses import (
    ACLS,
    CPC,
    FLSD,
    MMCE,
    CrossEntropy,
    EntropyPenalty,
    FocalLoss,
    LabelSmoothing,
    MbLS,
)

ATOL = 1e-12
F64 = torch.float64


def random_rows(n: int = 48, k: int = 7, seed: int = 0, scale: float = 6.0):
    """Random float64 logits, some rows with a top logit far above the margin 10."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=gen, dtype=F64) * scale
    z[: n // 4, 0] += 16.0  # tops above M: ACLS's positive term, MbLS's violations
    y = torch.randint(0, k, (n,), generator=gen)
    return z, y


def sweep_rows(k: int = 7):
    """Both grids of the analysis module, the label on the top class and on another."""
    d = torch.linspace(0.25, 24.0, 40, dtype=F64)
    rows = torch.cat(
        [
            distance_grid(d, k),
            distance_grid(d, k, top=13.0, others=4.0),
            top_grid(torch.linspace(0.5, 22.0, 30, dtype=F64), k, others=-1.0),
        ]
    )
    y = torch.zeros(len(rows), dtype=torch.long)
    y[1::3] = 1  # some misclassified rows: the label is not the top class
    return rows, y


def assert_close(actual, expected, atol=ATOL):
    assert actual.dtype == F64
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def onehot(y, k):
    return F.one_hot(y, k).to(F64)


# --- the two baselines: constant targets ---------------------------------------------------------


def test_cross_entropy_target_is_the_onehot():
    z, y = random_rows()
    assert_close(implicit_target(CrossEntropy(), z, y), onehot(y, z.shape[1]))


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("k", [2, 5, 200])
def test_label_smoothing_target_is_the_uniform_mixture(eps, k):
    z, y = random_rows(n=16, k=k, seed=k)
    expected = (1.0 - eps) * onehot(y, k) + eps / k
    assert_close(implicit_target(LabelSmoothing(alpha=eps), z, y), expected)
    assert_close(closed_form_target(LabelSmoothing(alpha=eps), z, y), expected)


# --- the regularized losses against their closed forms -------------------------------------------

LOSSES = {
    "focal-g3": FocalLoss(gamma=3.0),
    "focal-g0": FocalLoss(gamma=0.0),
    "focal-g0.5": FocalLoss(gamma=0.5),
    "flsd": FLSD(),
    "ecp": EntropyPenalty(beta=0.1),
    "ecp-strong": EntropyPenalty(beta=1.5),
    "mbls": MbLS(),
    "mbls-m3": MbLS(margin=3.0, alpha=0.4),
    "acls": ACLS(),
    "acls-m2": ACLS(alpha=0.3, pos_lambda=0.5, neg_lambda=2.0, margin=2.0),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("rows", ["random", "sweeps"])
def test_autograd_target_matches_closed_form(name, rows):
    loss = LOSSES[name]
    z, y = random_rows() if rows == "random" else sweep_rows()
    assert_close(implicit_target(loss, z, y), closed_form_target(loss, z, y))


def test_focal_with_gamma_zero_is_cross_entropy():
    z, y = random_rows()
    assert_close(implicit_target(FocalLoss(gamma=0.0), z, y), onehot(y, z.shape[1]))


def test_focal_target_by_hand():
    # Two classes, z = (0, 0): p_y = 1/2, gamma = 2:
    # w = (1/2)^2 - 2 (1/2) log(1/2) (1/2) = 1/4 + log(2)/2, target_y = 1/2 + w/2.
    z, y = torch.zeros(1, 2, dtype=F64), torch.tensor([0])
    w = 0.25 + math.log(2.0) / 2.0
    expected = torch.tensor([[0.5 + w / 2.0, 0.5 - w / 2.0]], dtype=F64)
    assert_close(implicit_target(FocalLoss(gamma=2.0), z, y), expected)


def test_ecp_target_by_hand():
    # Uniform p: log p_k + H = 0, so the entropy term leaves the one-hot unchanged.
    z, y = torch.zeros(3, 5, dtype=F64), torch.tensor([0, 2, 4])
    assert_close(implicit_target(EntropyPenalty(beta=0.7), z, y), onehot(y, 5))


def test_mbls_target_by_hand():
    # Distances 12 and 11 both exceed M = 10: each non-max gets alpha / K, the max loses 2x that.
    z, y = torch.tensor([[12.0, 0.0, 1.0], [12.0, 0.0, 5.0]], dtype=F64), torch.tensor([0, 0])
    step = 0.1 / 3
    expected = torch.tensor([[1 - 2 * step, step, step], [1 - step, step, 0.0]], dtype=F64)
    assert_close(implicit_target(MbLS(), z, y), expected)


def test_acls_target_by_hand():
    # pos: 1 - 2 * 0.1 * 1 * (12 - 10); neg: 2 * 0.1 * 0.1 / 2 * (12 - k - 10)_+.
    z, y = torch.tensor([[12.0, 0.0, 1.0], [9.0, 0.0, -2.0]], dtype=F64), torch.tensor([0, 0])
    expected = torch.tensor([[0.6, 0.02, 0.01], [1.0, 0.0, 0.01]], dtype=F64)
    assert_close(implicit_target(ACLS(), z, y), expected)


def test_acls_smooths_the_predicted_class_not_the_label():
    # Label 1, prediction 0 above M: the winner's target drops below zero, the label keeps 1.
    z, y = torch.tensor([[14.0, 3.0, 0.0]], dtype=F64), torch.tensor([1])
    expected = torch.tensor([[-0.8, 1.0 + 0.01 * 1.0, 0.01 * 4.0]], dtype=F64)
    assert_close(implicit_target(ACLS(), z, y), expected)


@pytest.mark.parametrize("loss", [MbLS(margin=1.0), ACLS(margin=1.0)], ids=["mbls", "acls"])
def test_tied_maxima(loss):
    z = torch.tensor([[5.0, 5.0, 0.0, 3.5], [2.0, 2.0, 2.0, -3.0]], dtype=F64)
    y = torch.tensor([3, 0])
    assert_close(implicit_target(loss, z, y), closed_form_target(loss, z, y))


def test_targets_sum_to_one_except_acls():
    z, y = random_rows()
    for name, loss in LOSSES.items():
        sums = implicit_target(loss, z, y).sum(1)
        if name.startswith("acls"):
            assert (sums - 1.0).abs().max() > 0.1, name  # the max is detached in the neg term
        else:
            assert_close(sums, torch.ones_like(sums))


def test_only_acls_reads_the_absolute_logits():
    z, y = random_rows()
    for name, loss in LOSSES.items():
        moved = (implicit_target(loss, z + 3.0, y) - implicit_target(loss, z, y)).abs().max()
        assert (moved > 0.1) if name.startswith("acls") else (moved < 1e-12), name


# --- the reduction and the ignored rows ----------------------------------------------------------


def test_per_row_target_does_not_depend_on_the_batch():
    z, y = random_rows(n=9)
    for loss in LOSSES.values():
        whole = implicit_target(loss, z, y)
        single = torch.cat([implicit_target(loss, z[i : i + 1], y[i : i + 1]) for i in range(9)])
        assert_close(whole, single)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_losses_and_their_reductions(reduction):
    z, y = random_rows(n=10)
    loss = nn.CrossEntropyLoss(label_smoothing=0.2, reduction=reduction)
    assert_close(implicit_target(loss, z, y), 0.8 * onehot(y, z.shape[1]) + 0.2 / z.shape[1])


def test_ignored_rows_are_nan_and_do_not_change_the_others():
    z, y = random_rows(n=8)
    y_ignored = y.clone()
    y_ignored[[1, 5]] = -100
    for loss in (CrossEntropy(), ACLS(), MbLS(), FocalLoss(), LabelSmoothing()):
        full = implicit_target(loss, z, y)
        part = implicit_target(loss, z, y_ignored)
        keep = y_ignored != -100
        assert torch.isnan(part[~keep]).all()
        assert_close(part[keep], full[keep])
        assert torch.isnan(closed_form_target(loss, z, y_ignored)[~keep]).all()


def test_per_row_gradient_leaves_the_logits_alone():
    z, y = random_rows(n=4)
    z.requires_grad_(True)
    p, grad = per_row_gradient(ACLS(), z, y)
    assert z.grad is None and not grad.requires_grad
    assert_close(p, torch.softmax(z.detach(), 1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="logits"):
        implicit_target(CrossEntropy(), torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        implicit_target(CrossEntropy(), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    for loss in (MMCE(), CPC()):
        with pytest.raises(TypeError, match=type(loss).__name__):
            closed_form_target(loss, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


# --- grids ---------------------------------------------------------------------------------------


def test_distance_grid():
    rows = distance_grid([0.5, 3.0], 5, top=1.0)
    assert rows.dtype == F64 and rows.shape == (2, 5)
    assert_close(rows.amax(1) - rows[:, 1], torch.tensor([0.5, 3.0], dtype=F64))
    assert (rows[:, 1:] == rows[:, 1:2]).all()  # every non-top class at d
    fixed = distance_grid(torch.tensor([0.5, 3.0]), 5, top=1.0, others=2.0, dtype=torch.float32)
    assert fixed.dtype == torch.float32 and (fixed[:, 2:] == -1.0).all()
    assert distance_grid([1.0], 2).tolist() == [[0.0, -1.0]]
    with pytest.raises(ValueError, match="num_classes"):
        distance_grid([1.0], 1)
    with pytest.raises(ValueError, match="distances"):
        distance_grid([math.nan], 3)


def test_top_grid():
    rows = top_grid([1.0, 9.0], 4, others=[0.0, -1.0, 2.0])
    assert rows.tolist() == [[1.0, 0.0, -1.0, 2.0], [9.0, 0.0, -1.0, 2.0]]
    assert (top_grid([3.0], 3)[:, 1:] == 0).all()
    with pytest.raises(ValueError, match="others"):
        top_grid([1.0], 4, others=[0.0, 1.0])


# --- stationary distances ------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "k"), [(0.05, 10), (0.1, 10), (0.2, 200)])
def test_label_smoothing_equilibrium_closed_form(alpha, k):
    # p_0 - p_1 = 1 - alpha with p_1 = u / (1 + (K-1) u), u = exp(-d).
    expected = math.log((1 + (k - 1) * (1 - alpha)) / alpha)
    assert equilibrium_distance(LabelSmoothing(alpha=alpha), k) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("loss", [CrossEntropy(), FocalLoss()], ids=["ce", "focal"])
def test_unbounded_losses_have_no_equilibrium(loss):
    assert equilibrium_distance(loss, 10) == math.inf


def test_mbls_equilibrium_is_the_kink():
    assert equilibrium_distance(MbLS(margin=10.0), 10) == pytest.approx(10.0, abs=1e-8)
    assert equilibrium_distance(MbLS(margin=4.0), 5) == pytest.approx(4.0, abs=1e-8)


def test_acls_equilibrium_is_smooth_just_past_the_margin():
    k, loss = 10, ACLS()
    d = equilibrium_distance(loss, k)
    # g_0 - g_1 = c (d - M) - K p_1(d) with c = 2 alpha lambda_neg / (K - 1).
    p1 = math.exp(-d) / (1 + (k - 1) * math.exp(-d))
    c = 2 * loss.alpha * loss.neg_lambda / (k - 1)
    assert d > loss.margin
    assert c * (d - loss.margin) == pytest.approx(k * p1, abs=1e-10)


def test_ecp_equilibrium_near_one_over_beta():
    # Large d: g_0 - g_1 ~ exp(-d) K (beta d - 1), a zero at d ~ 1 / beta.
    assert equilibrium_distance(EntropyPenalty(beta=0.1), 10) == pytest.approx(10.0, abs=0.05)


def test_equilibrium_at_the_lower_end():
    # A huge smoothing pulls the classes together everywhere.
    assert equilibrium_distance(LabelSmoothing(alpha=1.0), 4, low=0.5) == 0.5
