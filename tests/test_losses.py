"""Each loss against an independent float64 reference written from docs/REFERENCE.md's formulas.

The references loop over the rows one at a time in float64 torch (autograd gives their
gradients) and share nothing with the implementation: no flatten helper, no masking by weights,
no fused function.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import MARGIN_KERNELS, use_margin_kernel

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
from losses._fused import ACLSFunction, MbLSFunction
from losses.base import Batch
from losses.cpc import PairwiseExclusion
from losses.mmce import mmce_penalty

IGNORE = 255


# --- reference implementations ---------------------------------------------------------------


def valid_rows(logits, target, ignore_index=IGNORE):
    """(rows, labels): one logit vector per valid position, looping over every position."""
    rows, labels = [], []
    if logits.ndim == 2:
        positions = [(n,) for n in range(logits.shape[0])]
    else:
        positions = list(np.ndindex(logits.shape[0], *logits.shape[2:]))
    for pos in positions:
        label = int(target[pos])
        if label == ignore_index:
            continue
        index = (pos[0], slice(None), *pos[1:])
        rows.append(logits[index])
        labels.append(label)
    return rows, labels


def ce_row(z, y):
    return torch.logsumexp(z, 0) - z[y]


def ref_ce(z, y):
    return ce_row(z, y)


def ref_ls(z, y, alpha=0.05):
    lse = torch.logsumexp(z, 0)
    return (1 - alpha) * (lse - z[y]) + alpha * (lse - z).mean()


def ref_focal(z, y, gamma=3.0):
    ce = ce_row(z, y)
    p = torch.exp(-ce)
    return (1 - p) ** gamma * ce


def flsd_gamma(p, gamma=3.0):
    if p < 0.2:
        return 5.0
    if p < 0.5:
        return 3.0
    return gamma


def ref_flsd(z, y, gamma=3.0):
    ce = ce_row(z, y)
    p = torch.exp(-ce)
    return (1 - p) ** flsd_gamma(float(p.detach()), gamma) * ce


def ref_ecp(z, y, beta=0.1):
    logp = z - torch.logsumexp(z, 0)
    entropy = -(logp.exp() * logp).sum()
    return -logp[y] - beta * entropy


def ref_mbls(z, y, margin=10.0, alpha=0.1):
    zmax = z.max()  # not detached
    hinge = sum(torch.relu(zmax - z[k] - margin) for k in range(z.shape[0]))
    return ce_row(z, y) + alpha * hinge / z.shape[0]


def ref_acls(z, y, alpha=0.1, pos_lambda=1.0, neg_lambda=0.1, margin=10.0):
    k_max = int(torch.argmax(z))
    zmax = z[k_max]
    pos = torch.relu(zmax - margin) ** 2
    neg = sum(
        torch.relu(zmax.detach() - z[k] - margin) ** 2 for k in range(z.shape[0]) if k != k_max
    )
    reg = pos_lambda * pos + neg_lambda * neg / (z.shape[0] - 1)
    return ce_row(z, y) + alpha * reg


def ref_cpc(z, y, lambda_bdc=0.1, lambda_bec=1.0):
    n_cls = z.shape[0]
    others = [j for j in range(n_cls) if j != y]
    bdc = -sum(F.logsigmoid(z[y] - z[j]) for j in others) / (n_cls - 1)
    bec = -sum(0.5 * F.logsigmoid(z[j] - z[k]) for j in others for k in others if k != j) / (
        (n_cls - 1) * (n_cls - 2)
    )
    return ce_row(z, y) + lambda_bdc * bdc + lambda_bec * bec


def row_mean(ref, **kwargs):
    def loss(logits, target):
        rows, labels = valid_rows(logits, target)
        return torch.stack([ref(z, y, **kwargs) for z, y in zip(rows, labels)]).mean()

    return loss


def ref_mmce(logits, target, weight=1.0, bandwidth=0.4):
    rows, labels = valid_rows(logits, target)
    n = len(rows)
    ce = torch.stack([ce_row(z, y) for z, y in zip(rows, labels)]).mean()
    r = [torch.softmax(z, 0).max() for z in rows]
    c = [float(int(torch.argmax(z)) == y) for z, y in zip(rows, labels)]
    total = 0.0
    for i in range(n):
        for j in range(n):
            kernel = torch.exp(-torch.abs(r[i] - r[j]) / bandwidth)
            total = total + (c[i] - r[i]) * (c[j] - r[j]) * kernel
    return ce + weight * total / n**2


REFERENCES = {
    "ce": (CrossEntropy, {}, row_mean(ref_ce)),
    "ls": (LabelSmoothing, {"alpha": 0.2}, row_mean(ref_ls, alpha=0.2)),
    "focal": (FocalLoss, {"gamma": 2.5}, row_mean(ref_focal, gamma=2.5)),
    "flsd": (FLSD, {"gamma": 1.5}, row_mean(ref_flsd, gamma=1.5)),
    "ecp": (EntropyPenalty, {"beta": 0.3}, row_mean(ref_ecp, beta=0.3)),
    "mbls": (MbLS, {"margin": 2.0, "alpha": 0.3}, row_mean(ref_mbls, margin=2.0, alpha=0.3)),
    "mbls_default": (MbLS, {}, row_mean(ref_mbls)),
    "acls": (
        ACLS,
        {"alpha": 0.3, "pos_lambda": 0.7, "neg_lambda": 0.4, "margin": 3.0},
        row_mean(ref_acls, alpha=0.3, pos_lambda=0.7, neg_lambda=0.4, margin=3.0),
    ),
    "acls_default": (ACLS, {}, row_mean(ref_acls)),
    "cpc": (
        CPC,
        {"lambda_bdc": 0.4, "lambda_bec": 0.6},
        row_mean(ref_cpc, lambda_bdc=0.4, lambda_bec=0.6),
    ),
    "mmce": (MMCE, {"weight": 2.0}, lambda z, t: ref_mmce(z, t, weight=2.0)),
}

SHAPES = {"cls": (23, 7), "seg": (2, 6, 4, 5)}
MARGIN = {ACLS, MbLS}


def with_kernels(names, losses):
    """``(name, kernel)`` pairs: the margin losses on both implementations, the rest once."""
    return [
        pytest.param(n, k, id=f"{n}-{k}" if k else n)
        for n, loss in zip(names, losses)
        for k in (MARGIN_KERNELS if loss in MARGIN or type(loss) in MARGIN else (None,))
    ]


def use_kernel(kernel, monkeypatch):
    if kernel is not None:
        use_margin_kernel(kernel, monkeypatch)


def make_input(shape, scale=4.0, seed=0, ignore_frac=0.25, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(shape, generator=gen, dtype=dtype)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    ignored = torch.rand(target.shape, generator=gen) < ignore_frac
    target[ignored] = IGNORE
    return logits, target


def value_and_grad(fn, logits, target):
    leaf = logits.detach().clone().requires_grad_()
    value = fn(leaf, target)
    value.backward()
    return value.detach(), leaf.grad


# --- every loss against its reference ---------------------------------------------------------


REFERENCE_CASES = with_kernels(REFERENCES, [v[0] for v in REFERENCES.values()])


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("name", "kernel"), REFERENCE_CASES)
def test_matches_float64_reference(name, kernel, shape, monkeypatch):
    use_kernel(kernel, monkeypatch)
    cls, kwargs, ref = REFERENCES[name]
    # Scale 8 puts the default margins (10) to work: max logits above 10, distances above 10.
    logits, target = make_input(shape, scale=8.0 if "default" in name else 4.0)
    loss = cls(ignore_index=IGNORE, **kwargs)
    value, grad = value_and_grad(loss, logits, target)
    ref_value, ref_grad = value_and_grad(ref, logits, target)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert (grad.movedim(1, -1)[target == IGNORE] == 0).all()


@pytest.mark.parametrize(("name", "kernel"), REFERENCE_CASES)
def test_ignored_logits_change_nothing(name, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    cls, kwargs, _ = REFERENCES[name]
    logits, target = make_input(SHAPES["seg"], seed=1)
    loss = cls(ignore_index=IGNORE, **kwargs)
    value, grad = value_and_grad(loss, logits, target)
    noisy = logits.clone()
    mask = (target == IGNORE).unsqueeze(1).expand_as(logits)
    noisy[mask] = 50.0 * torch.randn(int(mask.sum()), dtype=logits.dtype)
    value2, grad2 = value_and_grad(loss, noisy, target)
    assert int(mask.sum()) > 0
    torch.testing.assert_close(value2, value, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(grad2, grad, rtol=1e-12, atol=1e-14)


def test_float32_close_to_float64(margin_kernel):
    logits, target = make_input(SHAPES["seg"], scale=8.0)
    for cls, kwargs, _ in REFERENCES.values():
        loss = cls(ignore_index=IGNORE, **kwargs)
        v64, g64 = value_and_grad(loss, logits, target)
        v32, g32 = value_and_grad(loss, logits.float(), target)
        assert v32.dtype == torch.float32
        torch.testing.assert_close(v32.double(), v64, rtol=2e-5, atol=1e-6)
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-6)


# --- equalities with torch's cross-entropy ----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_label_smoothing_equals_torch(shape):
    logits, target = make_input(shape)
    for alpha in (0.0, 0.05, 0.3, 1.0):
        ours = value_and_grad(LabelSmoothing(alpha, ignore_index=IGNORE), logits, target)
        theirs = value_and_grad(
            lambda z, t, a=alpha: F.cross_entropy(z, t, ignore_index=IGNORE, label_smoothing=a),
            logits,
            target,
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


ZERO_WEIGHT = {
    "ce": CrossEntropy(ignore_index=IGNORE),
    "ls": LabelSmoothing(alpha=0.0, ignore_index=IGNORE),
    "focal": FocalLoss(gamma=0.0, ignore_index=IGNORE),
    "flsd": FLSD(gamma=0.0, schedule=((0.2, 0.0), (0.5, 0.0)), ignore_index=IGNORE),
    "ecp": EntropyPenalty(beta=0.0, ignore_index=IGNORE),
    "mmce": MMCE(weight=0.0, ignore_index=IGNORE),
    "mbls": MbLS(alpha=0.0, margin=1.0, ignore_index=IGNORE),
    "acls": ACLS(alpha=0.0, margin=1.0, ignore_index=IGNORE),
    "acls_lambdas": ACLS(pos_lambda=0.0, neg_lambda=0.0, margin=1.0, ignore_index=IGNORE),
    "cpc": CPC(lambda_bdc=0.0, lambda_bec=0.0, ignore_index=IGNORE),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("name", "kernel"), with_kernels(ZERO_WEIGHT, ZERO_WEIGHT.values()))
def test_zero_weight_equals_cross_entropy(name, kernel, shape, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, target = make_input(shape, scale=6.0)
    ours = value_and_grad(ZERO_WEIGHT[name], logits, target)
    theirs = value_and_grad(lambda z, t: F.cross_entropy(z, t, ignore_index=IGNORE), logits, target)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


# --- parts: what they are and how the total is made of them ----------------------------------

TOTALS = {
    "ls": (LabelSmoothing(alpha=0.2), lambda p: 0.8 * p["ce"] + 0.2 * p["uniform"]),
    "ecp": (EntropyPenalty(beta=0.3), lambda p: p["ce"] - 0.3 * p["entropy"]),
    "mmce": (MMCE(weight=2.0), lambda p: p["ce"] + 2.0 * p["mmce"]),
    "mbls": (MbLS(margin=2.0, alpha=0.3), lambda p: p["ce"] + 0.3 * p["reg"]),
    "acls": (ACLS(alpha=0.3, margin=3.0), lambda p: p["ce"] + 0.3 * p["reg"]),
    "cpc": (
        CPC(lambda_bdc=0.4, lambda_bec=0.6),
        lambda p: p["ce"] + 0.4 * p["bdc"] + 0.6 * p["bec"],
    ),
}


@pytest.mark.parametrize(("name", "kernel"), with_kernels(TOTALS, [v[0] for v in TOTALS.values()]))
def test_parts_are_unweighted_terms(name, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    loss, combine = TOTALS[name]
    logits, target = make_input(SHAPES["cls"], ignore_frac=0.0)
    total, parts = loss.forward_with_parts(logits, target)
    torch.testing.assert_close(total, combine(parts), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts["ce"], F.cross_entropy(logits, target), rtol=1e-12, atol=0)


def test_acls_reg_part_is_the_reference_regularizer(margin_kernel):
    logits, target = make_input(SHAPES["seg"], scale=8.0)
    _, parts = ACLS(ignore_index=IGNORE).forward_with_parts(logits, target)
    rows, labels = valid_rows(logits, target)
    reg = torch.stack([(ref_acls(z, y) - ce_row(z, y)) / 0.1 for z, y in zip(rows, labels)])
    torch.testing.assert_close(parts["reg"], reg.mean(), rtol=1e-12, atol=1e-12)


# --- ACLS: the analytic gradient and its properties ------------------------------------------


def acls_soft_target_grad(logits, target, alpha, pos_lambda, neg_lambda, margin):
    """docs/REFERENCE.md: dL/dz_k = (p_k - yhat_k) / N with the implicit soft targets (NumPy)."""
    z = logits.detach().numpy()
    t = target.numpy()
    n_valid = int((t != IGNORE).sum())
    n_cls = z.shape[1]
    grad = np.zeros_like(z)
    for i in range(z.shape[0]):
        if t[i] == IGNORE:
            continue
        zmax = z[i].max()
        p = np.exp(z[i] - zmax) / np.exp(z[i] - zmax).sum()
        soft = np.zeros(n_cls)
        soft[t[i]] = 1.0
        for k in range(n_cls):
            if z[i, k] == zmax:
                soft[k] -= 2 * alpha * pos_lambda * max(zmax - margin, 0.0)
            else:
                soft[k] += 2 * alpha * neg_lambda / (n_cls - 1) * max(zmax - z[i, k] - margin, 0.0)
        grad[i] = (p - soft) / n_valid
    return torch.from_numpy(grad)


@pytest.mark.parametrize("margin", [0.0, 3.0, 10.0])
def test_acls_gradient_is_the_soft_target_formula(margin, margin_kernel):
    logits, target = make_input((40, 9), scale=8.0, seed=3)
    kwargs = {"alpha": 0.2, "pos_lambda": 0.9, "neg_lambda": 0.3, "margin": margin}
    _, grad = value_and_grad(ACLS(ignore_index=IGNORE, **kwargs), logits, target)
    expected = acls_soft_target_grad(logits, target, **kwargs)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def regularizer_grad(pos_lambda, neg_lambda, logits, target):
    """Gradient of R alone: ACLS(alpha=1) minus ACLS(alpha=0), whose cross-entropy gradient is
    bit-identical, so the sign of each entry is exactly the sign of R's gradient."""
    kwargs = {"pos_lambda": pos_lambda, "neg_lambda": neg_lambda, "margin": 4.0}
    _, grad = value_and_grad(ACLS(alpha=1.0, **kwargs), logits, target)
    _, ce_grad = value_and_grad(ACLS(alpha=0.0, **kwargs), logits, target)
    return grad - ce_grad


def test_acls_positive_term_only_pushes_the_top_logit_down(margin_kernel):
    logits, target = make_input((60, 8), scale=4.0, seed=4, ignore_frac=0.0)
    grad = regularizer_grad(1.0, 0.0, logits, target)
    top = logits == logits.amax(1, keepdim=True)
    over = (logits.amax(1) - 4.0).clamp(min=0)
    assert (grad[top] >= 0).all()  # descent moves the top logit down (or leaves it)
    assert (grad[~top] == 0).all()
    torch.testing.assert_close(grad[top], 2 * over / 60, rtol=1e-12, atol=1e-15)
    assert (over > 0).sum() > 10


def test_acls_negative_term_never_moves_the_top_logit(margin_kernel):
    logits, target = make_input((60, 8), scale=4.0, seed=5, ignore_frac=0.0)
    grad = regularizer_grad(0.0, 1.0, logits, target)
    top = logits == logits.amax(1, keepdim=True)
    assert (grad[top] == 0).all()
    assert (grad[~top] <= 0).all()  # descent pushes the other logits up
    assert (grad[~top] < 0).sum() > 20


def test_acls_ties_count_every_tied_entry_as_positive(margin_kernel):
    logits = torch.tensor([[13.0, 13.0, 1.0, 0.0], [12.0, 12.0, 12.0, -5.0]], dtype=torch.float64)
    target = torch.tensor([0, 3])
    loss = ACLS(alpha=0.5, pos_lambda=1.0, neg_lambda=0.0, margin=10.0)
    _, parts = loss.forward_with_parts(logits, target)
    # Row 0: two positives of (13 - 10)^2; row 1: three of (12 - 10)^2.
    torch.testing.assert_close(parts["reg"], torch.tensor((2 * 9.0 + 3 * 4.0) / 2).double())
    _, grad = value_and_grad(loss, logits, target)
    _, ce_grad = value_and_grad(CrossEntropy(), logits, target)
    # 2 * alpha * pos_lambda * [zmax - M]_+ / N on every tied entry, 0 elsewhere.
    expected = torch.tensor([[3.0, 3.0, 0, 0], [2.0, 2.0, 2.0, 0]], dtype=torch.float64) / 2
    torch.testing.assert_close(grad - ce_grad, expected, rtol=1e-12, atol=1e-15)


def test_mbls_tie_splits_the_max_gradient_like_amax(margin_kernel):
    logits = torch.tensor([[13.0, 13.0, 1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0])
    loss = MbLS(margin=10.0, alpha=1.0)

    def with_amax(z, t):
        hinge = torch.relu(z.amax(1, keepdim=True) - z - 10.0).mean()
        return F.cross_entropy(z, t) + hinge

    ours = value_and_grad(loss, logits, target)
    theirs = value_and_grad(with_amax, logits, target)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)


def test_margin_above_the_folded_shift(margin_kernel):
    """Margins above 60 are not folded into the exponent; same results."""
    logits, target = make_input((30, 6), scale=60.0, seed=6)
    for cls, ref in ((ACLS, ref_acls), (MbLS, ref_mbls)):
        loss = cls(margin=80.0, ignore_index=IGNORE)
        ours = value_and_grad(loss, logits, target)
        theirs = value_and_grad(row_mean(ref, margin=80.0), logits, target)
        torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block", [None, 7, 60, 100])  # block sizes in logits
@pytest.mark.parametrize("margin", [2.0, 1e6])  # violations, and none at all
@pytest.mark.parametrize("shape", [(23, 6), (3, 6, 5, 7)], ids=["cls", "seg"])
def test_fused_blocks_and_skip_checks(monkeypatch, shape, margin, block, threads):
    """Cache blocks (rows, or spatial slices with a ragged last one; used with one thread),
    the single block of several threads and the 'is any row of the block active?' checks
    change nothing."""
    import losses._fused as fused

    use_margin_kernel("eager", monkeypatch)
    logits, target = make_input(shape, scale=6.0, seed=7)
    losses = [ACLS(margin=margin, ignore_index=IGNORE), MbLS(margin=margin, ignore_index=IGNORE)]
    expected = [value_and_grad(loss, logits, target) for loss in losses]
    with torch.no_grad():
        expected_eval = [loss(logits, target) for loss in losses]
    monkeypatch.setattr(fused, "_SKIP_CHECK_FROM", 0)
    if block is not None:
        monkeypatch.setattr(fused, "_CPU_BLOCK", block)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for loss, (value, grad), value_eval in zip(losses, expected, expected_eval):
            got_value, got_grad = value_and_grad(loss, logits, target)
            torch.testing.assert_close(got_value, value, rtol=1e-14, atol=1e-15)
            torch.testing.assert_close(got_grad, grad, rtol=1e-13, atol=1e-16)
            with torch.no_grad():
                torch.testing.assert_close(loss(logits, target), value_eval, rtol=1e-14, atol=0)
    finally:
        torch.set_num_threads(before)


def test_errors_inside_blocks_propagate(monkeypatch):
    import losses._fused as fused

    use_margin_kernel("eager", monkeypatch)
    monkeypatch.setattr(fused, "_CPU_BLOCK", 10)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits, target = make_input((2, 6, 5, 7), seed=8, ignore_frac=0.0)
        target[1, 4, 6] = 6  # out of range, unchecked: the gather of the last block fails
        with pytest.raises(RuntimeError):
            ACLS(validate=False)(logits, target)
    finally:
        torch.set_num_threads(before)


def test_blocks_cover_every_logit_once():
    import losses._fused as fused

    for n, k, r, budget in [(5, 3, 1, 7), (2, 4, 10, 12), (3, 5, 7, 100), (4, 2, 3, 1000)]:
        seen = torch.zeros(n, k, r, dtype=torch.long)
        for rows, cols in fused._blocks(n, k, r, budget):
            seen[rows, :, cols] += 1
        assert (seen == 1).all()


def test_backward_scaling_and_retained_graph(margin_kernel):
    logits, target = make_input(SHAPES["seg"], scale=8.0, seed=8)
    for loss in (ACLS(ignore_index=IGNORE), MbLS(ignore_index=IGNORE)):
        _, grad = value_and_grad(loss, logits, target)
        leaf = logits.clone().requires_grad_()
        out = loss(leaf, target)
        out.backward(retain_graph=True)
        out.backward(retain_graph=True)
        torch.testing.assert_close(leaf.grad, 2 * grad, rtol=1e-15, atol=0)
        leaf.grad = None
        (3.0 * out).backward()
        torch.testing.assert_close(leaf.grad, 3 * grad, rtol=1e-15, atol=0)


def test_fused_functions_refuse_double_backward(margin_kernel):
    logits, target = make_input((4, 5), scale=8.0, ignore_frac=0.0)
    leaf = logits.clone().requires_grad_()
    (grad,) = torch.autograd.grad(ACLS()(leaf, target), leaf, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


# --- gradcheck of the hand-written backward passes ----------------------------------------------


def fused_inputs(ignored):
    """A small dense batch; with ``ignored``, a quarter of the pixels carry the ignore index."""
    logits, target = make_input((3, 5, 2, 2), scale=6.0, seed=9, ignore_frac=0.0)
    if ignored:
        target[0, 1, 0] = target[2, :, 1] = IGNORE
    leaf = logits.clone().requires_grad_()
    return leaf, Batch(leaf, target, IGNORE)


@pytest.mark.parametrize("ignored", [False, True], ids=["all-valid", "ignored-rows"])
def test_gradcheck_fused_functions(ignored, margin_kernel):
    """MbLS, and ACLS without its negative term, are plain functions: gradcheck them.

    ACLS's negative term stops the gradient through the max, so its gradient is not the
    derivative of its value at the top logit, by design; it is checked just below.
    """
    leaf, batch = fused_inputs(ignored)
    assert torch.autograd.gradcheck(lambda z: MbLSFunction.apply(z, batch, 2.0, 0.3)[0], (leaf,))
    assert torch.autograd.gradcheck(
        lambda z: ACLSFunction.apply(z, batch, 2.0, 0.3, 0.8, 0.0)[0], (leaf,)
    )


@pytest.mark.parametrize("ignored", [False, True], ids=["all-valid", "ignored-rows"])
def test_acls_negative_term_finite_differences_off_the_max(ignored, margin_kernel):
    """Off the top logit the stop-gradient changes nothing: central differences agree."""
    leaf, batch = fused_inputs(ignored)

    def f(z):
        return ACLSFunction.apply(z, batch, 2.0, 0.3, 0.8, 0.5)[0]

    (grad,) = torch.autograd.grad(f(leaf), leaf)
    z = leaf.detach()
    top = z == z.amax(1, keepdim=True)
    eps = 1e-6
    checked = 0
    for index in zip(*torch.nonzero(~top, as_tuple=True)):
        up, down = z.clone(), z.clone()
        up[index] += eps
        down[index] -= eps
        numeric = (f(up) - f(down)) / (2 * eps)
        assert abs(float(numeric) - float(grad[index])) < 1e-7
        checked += 1
    assert checked == 48


def test_gradcheck_pairwise_exclusion(monkeypatch):
    import losses.cpc as cpc

    monkeypatch.setattr(cpc, "_BLOCK_ELEMENTS", 50)  # several blocks of rows
    rows = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (7,))
    assert torch.autograd.gradcheck(lambda z: PairwiseExclusion.apply(z, target), (rows,))


# --- FLSD: the vectorized gamma rule ----------------------------------------------------------


def test_flsd_gammas_equal_the_per_sample_loop():
    p = torch.cat([torch.rand(500, dtype=torch.float64), torch.tensor([0.2, 0.5, 0.0, 1.0])])
    p = p.double()
    loss = FLSD(gamma=1.5)
    expected = torch.tensor([flsd_gamma(float(x), 1.5) for x in p], dtype=torch.float64)
    torch.testing.assert_close(loss.gammas(p), expected, rtol=0, atol=0)
    p32 = torch.tensor([0.2, 0.5, 0.19999, 0.49999])
    assert loss.gammas(p32).tolist() == [3.0, 1.5, 5.0, 3.0]


def test_flsd_custom_schedule():
    loss = FLSD(gamma=1.0, schedule=[(0.1, 7.0), (0.3, 4.0), (0.9, 2.0)])
    p = torch.tensor([0.05, 0.1, 0.2, 0.5, 0.95])
    assert loss.gammas(p).tolist() == [7.0, 4.0, 4.0, 2.0, 1.0]


# --- MMCE: exact O(N log N) evaluation, no square root ---------------------------------------


def quadratic_mmce(r, c, bandwidth=0.4):
    a = c - r
    kernel = torch.exp(-(r[:, None] - r[None, :]).abs() / bandwidth)
    return (a[:, None] * a[None, :] * kernel).sum() / r.numel() ** 2


@pytest.mark.parametrize("bandwidth", [0.4, 0.05, 1e-3])
def test_mmce_penalty_equals_the_quadratic_formula(bandwidth):
    gen = torch.Generator().manual_seed(10)
    r = torch.rand(300, dtype=torch.float64, generator=gen).requires_grad_()
    c = (torch.rand(300, dtype=torch.float64, generator=gen) < 0.7).double()
    ours = mmce_penalty(r, c, bandwidth)
    (g_ours,) = torch.autograd.grad(ours, r)
    theirs = quadratic_mmce(r, c, bandwidth)
    (g_theirs,) = torch.autograd.grad(theirs, r)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-8, atol=1e-12)


def test_mmce_has_no_square_root():
    r = torch.tensor([0.9, 0.6, 0.8], dtype=torch.float64)
    c = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    value = mmce_penalty(r, c)
    torch.testing.assert_close(value, quadratic_mmce(r, c), rtol=1e-14, atol=0)
    assert not math.isclose(float(value), math.sqrt(float(value)))
    assert mmce_penalty(r[:0], c[:0]) == 0


def test_mmce_float32_on_many_rows():
    """Float32 in, float64 inside: the O(N log N) sums stay accurate on thousands of rows."""
    gen = torch.Generator().manual_seed(11)
    r = torch.rand(4000, generator=gen)
    c = (torch.rand(4000, generator=gen) < 0.6).float()
    value = mmce_penalty(r, c)
    assert value.dtype == torch.float32
    torch.testing.assert_close(
        value.double(), quadratic_mmce(r.double(), c.double()), rtol=1e-6, atol=1e-9
    )


# --- focal: safe at p = 1 --------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 3.0])
def test_focal_gradient_finite_when_certain(gamma):
    logits = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]], requires_grad=True)
    value = FocalLoss(gamma=gamma)(logits, torch.tensor([0, 1]))
    value.backward()
    assert float(value.detach()) == 0.0
    assert torch.isfinite(logits.grad).all()


def test_cpc_block_size_does_not_change_results(monkeypatch):
    import losses.cpc as cpc

    logits, target = make_input((11, 6), seed=12)
    expected = value_and_grad(CPC(ignore_index=IGNORE), logits, target)
    monkeypatch.setattr(cpc, "_BLOCK_ELEMENTS", 40)
    got = value_and_grad(CPC(ignore_index=IGNORE), logits, target)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "schedule",
    [[], [(0.5, 3.0), (0.2, 5.0)], [(0.0, 5.0)], [(1.5, 5.0)], [(0.2, -1.0)], [(0.2,)]],
)
def test_flsd_rejects_bad_schedules(schedule):
    with pytest.raises(ValueError, match="schedule"):
        FLSD(schedule=schedule)


def test_error_messages_name_argument_expected_and_actual():
    with pytest.raises(
        ValueError, match=r"`alpha` must be a finite number >= 0.0 and <= 1.0; got 1.5"
    ):
        LabelSmoothing(alpha=1.5)
    with pytest.raises(ValueError, match=r"`margin` must be a finite number >= 0.0; got -2.0"):
        ACLS(margin=-2.0)
    with pytest.raises(ValueError, match=r"`bandwidth` must be a finite number >= 0.001; got 0.0"):
        MMCE(bandwidth=0.0)
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number >= 0.0; got -1"):
        FocalLoss(gamma=-1)
