"""Probabilities (``from_logits=False``) must sum to one over the class dim, within a tolerance.

The tolerance is ``2 * max(eps(dtype), eps(float16))``: 2**-9 (1.95e-3) for float16, float32
and float64, 2**-6 (1.56e-2) for bfloat16. Checked under ``validate_args=True`` on every row
(ignored ones included), for every registered metric (``tests/metric_cases.py``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from metric_cases import BY_NAME, CASES, CLASSIFICATION, DENSE, NAMES

from lightning_calib.metrics import ECE, NLL, BrierScore
from lightning_calib.metrics import functional as F
from lightning_calib.metrics.functional import _validation

C = 4


def seg_batch(seed, n=2, h=6, w=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, C, h, w, generator=g) * 2.5).to(dtype)
    y = torch.randint(0, C, (n, h, w), generator=g)
    y[torch.rand(n, h, w, generator=g) < 0.15] = 255
    return z, y


SUM_MATCH = r"`preds` must be probabilities summing to 1 over the class dim \(dim 1\)"
TOLERANCES = {
    torch.float16: 2**-9,
    torch.bfloat16: 2**-6,
    torch.float32: 2**-9,
    torch.float64: 2**-9,
}


def wrong_dim_probabilities(kind, seed=10):
    """A softmax over the wrong dim: values in [0, 1], rows far from summing to 1."""
    z, y = seg_batch(seed, n=3)
    if kind == CLASSIFICATION:  # 8 rows (N, C), softmax over the rows
        return z.movedim(1, -1).reshape(-1, C)[:8].softmax(0), y.reshape(-1)[:8]
    assert kind == DENSE
    return z.softmax(2), y  # over the height


@pytest.mark.parametrize(
    ("name", "kind"),
    [pytest.param(c.name, k, id=f"{c.name}-{k}") for c in CASES for k in sorted(c.inputs)],
)
def test_softmax_over_the_wrong_dim_is_refused(name, kind):
    case = BY_NAME[name]
    probs, y = wrong_dim_probabilities(kind)
    assert 0.0 <= float(probs.min()) and float(probs.max()) <= 1.0  # the range check passes
    err = (probs.double().sum(1) - 1).abs().reshape(-1)
    assert float(err.max()) > 0.3
    worst = float(probs.double().sum(1).reshape(-1)[err.argmax()])
    metric = case.make(C, 255, from_logits=False)
    match = SUM_MATCH + rf".*<= 0\.001953 for torch\.float32.*sums to {re.escape(f'{worst:.8g}')}"
    with pytest.raises(ValueError, match=match):
        metric.update(probs, y)
    if case.functional is not None:
        with pytest.raises(ValueError, match=SUM_MATCH):
            case.functional(metric, probs, y)
    # validate_args=False: neither check nor cost (and a meaningless value)
    case.make(C, 255, from_logits=False, validate_args=False).update(probs, y)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("name", NAMES)
def test_probabilities_of_every_float_dtype_pass(name, dtype):
    z, y = seg_batch(11, n=3, h=8, w=8)
    for probs in (z.double().softmax(1).to(dtype), z.to(dtype).softmax(1)):
        checked = BY_NAME[name].make(C, 255, from_logits=False)
        unchecked = BY_NAME[name].make(C, 255, from_logits=False, validate_args=False)
        checked.update(probs, y)
        unchecked.update(probs, y)
        value = checked.compute().item()
        assert value == pytest.approx(unchecked.compute().item(), abs=0, nan_ok=True)
        assert not math.isnan(value)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("n_classes", [2, 21, 1000])
def test_no_false_rejection_of_rounded_or_low_precision_softmaxes(dtype, n_classes):
    """Softmaxes rounded to the dtype, computed in it, or as exp / sum in it: all accepted."""
    g = torch.Generator().manual_seed(n_classes)
    n = 20_000 // n_classes + 50
    z = torch.randn(n, n_classes, generator=g, dtype=torch.float64)
    z = (z * torch.empty(n, 1, dtype=torch.float64).uniform_(0.1, 8.0, generator=g)).clamp(-4, 4)
    y = torch.zeros(n, dtype=torch.long)
    e = z.to(dtype).exp()
    for probs in (z.softmax(1).to(dtype), z.to(dtype).softmax(1), e / e.sum(1, keepdim=True)):
        F._tensor_validation(probs, y, None, from_logits=False)
        worst = float((probs.double().sum(1) - 1).abs().max())
        assert worst <= TOLERANCES[dtype] / 2  # the factor of 2 of headroom is real


@pytest.mark.parametrize(("dtype", "tol"), list(TOLERANCES.items()))
def test_the_stated_sum_tolerance(dtype, tol):
    assert F._prob_sum_tolerance(dtype) == tol
    y = torch.tensor([0, 1])

    def rows(excess):  # exactly representable in every dtype here; row 0 sums to 1 + excess
        probs = torch.tensor([[0.5, 0.5 + excess], [0.25, 0.75]], dtype=torch.float64).to(dtype)
        assert probs.double().sum(1).tolist() == [1.0 + excess, 1.0]
        return probs

    for excess in (tol / 2, tol, -tol):
        BrierScore(from_logits=False).update(rows(excess), y)  # accepted
    with pytest.raises(ValueError, match=SUM_MATCH + rf".*<= {tol:.4g} for {dtype}"):
        BrierScore(from_logits=False).update(rows(2 * tol), y)
    with pytest.raises(ValueError, match=SUM_MATCH):
        BrierScore(from_logits=False).update(rows(-2 * tol), y)
    if dtype == torch.float64:  # right at the edge
        BrierScore(from_logits=False).update(rows(tol * (1 - 2**-20)), y)
        with pytest.raises(ValueError, match=SUM_MATCH):
            BrierScore(from_logits=False).update(rows(tol * (1 + 2**-20)), y)


def test_sum_error_names_the_worst_row_and_ignored_rows_are_checked():
    """The message gives the tolerance and the worst row; rows of ignore_index are checked too."""
    z, y = seg_batch(12, n=2, h=4, w=5)
    probs = z.softmax(1)
    probs[0, :, 1, 1] = torch.tensor([0.5, 0.25, 0.25, 0.125])  # sums to 1.125
    probs[1, :, 2, 3] = torch.tensor([0.5, 0.25, 0.25, 0.25])  # sums to 1.25: the worst
    y[1, 2, 3] = 255  # ignored, yet checked (as for NaN): the whole tensor must be valid
    match = (
        SUM_MATCH + r" when from_logits=False: \|sum - 1\| <= 0\.001953 for torch\.float32 .*"
        r"the worst row, preds\[1, :, 2, 3\], sums to 1\.25\. Was the softmax taken over"
    )
    with pytest.raises(ValueError, match=match):
        ECE(ignore_index=255, from_logits=False).update(probs, y)
    ECE(ignore_index=255, from_logits=False, validate_args=False).update(probs, y)
    rows = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.5, 0.25]])
    with pytest.raises(ValueError, match=r"the worst row, preds\[2, :\], sums to 0\.75\."):
        NLL(from_logits=False).update(rows, torch.tensor([0, 1, 0]))


def test_the_sum_is_computed_only_for_probabilities_under_validate_args(monkeypatch):
    calls = []
    real = _validation._check_prob_sums
    monkeypatch.setattr(_validation, "_check_prob_sums", lambda p: calls.append(p) or real(p))
    z, y = seg_batch(13)
    ECE(ignore_index=255).update(z, y)  # logits: no sum
    ECE(ignore_index=255, from_logits=False, validate_args=False).update(z.softmax(1), y)
    assert calls == []
    ECE(ignore_index=255, from_logits=False).update(z.softmax(1), y)
    assert len(calls) == 1
