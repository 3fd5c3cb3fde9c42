"""Calibration metrics against an independent float64 NumPy reference, over several batches.

The reference below is written straight from the formulas of docs/REFERENCE.md ("Calibration
metrics"): softmax in NumPy float64, rows of every valid pixel, bins by the formula, loops over
bins. The only thing shared with the implementation is the equal-width bin index formula
``clip(ceil(conf * n) - 1, 0, n - 1)`` in float64, the convention both must follow at the edges.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from lightning_calib.metrics import (
    ECE,
    MCE,
    NLL,
    AdaptiveECE,
    BatchAveragedECE,
    BrierScore,
    ClasswiseECE,
    ImagewiseECE,
    TopKAccuracy,
)
from lightning_calib.metrics import functional as F

# ----------------------------------------------------------------------------------------------
# the reference
# ----------------------------------------------------------------------------------------------


def ref_rows(preds, target, ignore_index=None, from_logits=True):
    """(probabilities (M, C) float64, target (M,)) of the valid rows."""
    x = preds.detach().to(torch.float64).numpy()
    y = target.numpy().astype(np.int64)
    c = x.shape[1]
    x = np.moveaxis(x, 1, -1).reshape(-1, c)
    y = y.reshape(-1)
    if ignore_index is not None:
        keep = y != ignore_index
        x, y = x[keep], y[keep]
    if from_logits:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        x = e / e.sum(axis=1, keepdims=True)
    return x, y


def ref_bin(conf, n_bins):
    return np.clip(np.ceil(conf * n_bins) - 1, 0, n_bins - 1).astype(np.int64)


def ref_binned_gaps(conf, hit, b, n_bins):
    """[(|B_b|, |acc_b - conf_b|)] over the non-empty bins."""
    out = []
    for k in range(n_bins):
        m = b == k
        if m.any():
            out.append((m.sum(), abs(hit[m].mean() - conf[m].mean())))
    return out


def ref_ece(p, y, n_bins=15):
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    gaps = ref_binned_gaps(conf, hit, ref_bin(conf, n_bins), n_bins)
    return sum(n * g for n, g in gaps) / len(y) if len(y) else float("nan")


def ref_mce(p, y, n_bins=15):
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    gaps = ref_binned_gaps(conf, hit, ref_bin(conf, n_bins), n_bins)
    return max(g for _, g in gaps)


def ref_aece(p, y, n_bins=15):
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    n = len(conf)
    edges = np.interp(np.linspace(0, n, n_bins + 1), np.arange(n), np.sort(conf))
    total = 0.0
    for k in range(n_bins):
        m = (conf > edges[k]) & (conf <= edges[k + 1])
        if k == 0:
            m |= conf == edges[0]  # the fix: the first bin is closed at its lower end
        if m.any():
            total += m.sum() * abs(hit[m].mean() - conf[m].mean())
    return total / n


def ref_cece(p, y, n_bins=15):
    per_class = []
    for c in range(p.shape[1]):
        pc, hit = p[:, c], (y == c).astype(np.float64)
        gaps = ref_binned_gaps(pc, hit, ref_bin(pc, n_bins), n_bins)
        per_class.append(sum(n * g for n, g in gaps) / len(y))
    return float(np.mean(per_class))


def ref_nll(p, y):
    return float(np.mean(-np.log(p[np.arange(len(y)), y])))


def ref_brier(p, y):
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(((p - onehot) ** 2).sum(1)))


def ref_topk(p, y, k):
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == y[:, None]).any(1)))


def ref_imagewise(batches, ignore_index, n_bins=15):
    values = []
    for preds, target in batches:
        for i in range(preds.shape[0]):
            p, y = ref_rows(preds[i : i + 1], target[i : i + 1], ignore_index)
            if len(y):
                values.append(ref_ece(p, y, n_bins))
    return float(np.mean(values))


def ref_batch_averaged(batches, ignore_index, exclude=(0,), n_bins=15):
    num = den = 0.0
    for preds, target in batches:
        p, y = ref_rows(preds, target, ignore_index)
        keep = ~np.isin(y, exclude)
        p, y = p[keep], y[keep]
        if len(y):
            num += len(y) * ref_ece(p, y, n_bins)
            den += len(y)
    return num / den


def ref_all_rows(batches, ignore_index=None, from_logits=True):
    parts = [ref_rows(p, t, ignore_index, from_logits) for p, t in batches]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------

C = 5


def miscalibrated_logits(shape, seed, n_classes=C):
    """Logits and targets, under-confident below ~0.5 and over-confident above ~0.6.

    Rows get a random temperature so confidences cover (1/C, 1); the target equals the arg-max
    with probability ``conf + 0.2`` for low confidences and ``conf - 0.2`` for high ones.
    """
    g = torch.Generator().manual_seed(seed)
    n = shape[0]
    spatial = tuple(shape[1:])
    rows = int(np.prod((n, *spatial)))
    z = torch.randn(rows, n_classes, generator=g, dtype=torch.float64)
    z = z * torch.empty(rows, 1, dtype=torch.float64).uniform_(0.2, 6.0, generator=g)
    p = z.softmax(1)
    conf, pred = p.max(1)
    acc_prob = torch.where(conf < 0.5, conf + 0.2, conf - 0.2).clamp(0, 1)
    hit = torch.rand(rows, generator=g, dtype=torch.float64) < acc_prob
    other = (pred + torch.randint(1, n_classes, (rows,), generator=g)) % n_classes
    y = torch.where(hit, pred, other)
    z = z.float()
    if spatial:
        z = z.view(n, *spatial, n_classes).movedim(-1, 1).contiguous()
        y = y.view(n, *spatial)
    return z, y


def with_void(target, seed, frac=0.2, value=255):
    g = torch.Generator().manual_seed(seed + 1000)
    mask = torch.rand(target.shape, generator=g) < frac
    return target.masked_fill(mask, value)


def make_batches(kind, ignore_index, seeds=(0, 1, 2), from_logits=True):
    sizes = {"cls": [(37,), (64,), (5,)], "seg": [(2, 9, 7), (3, 9, 7), (1, 9, 7)]}[kind]
    out = []
    for seed, shape in zip(seeds, sizes):
        z, y = miscalibrated_logits(shape, seed)
        if ignore_index is not None:
            y = with_void(y, seed, value=ignore_index)
        out.append((z if from_logits else z.softmax(1), y))
    return out


def run(metric, batches):
    for preds, target in batches:
        metric.update(preds, target)
    return metric.compute().item()


CASES = [
    pytest.param("cls", None, True, id="cls"),
    pytest.param("cls", -100, True, id="cls-ignore"),
    pytest.param("seg", 255, True, id="seg-ignore"),
    pytest.param("seg", None, False, id="seg-probs"),
]


# ----------------------------------------------------------------------------------------------
# equal-width binned metrics
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "ignore", "from_logits"), CASES)
@pytest.mark.parametrize("n_bins", [15, 7])
def test_ece_and_mce_equal_reference_on_concatenated_batches(kind, ignore, from_logits, n_bins):
    batches = make_batches(kind, ignore, from_logits=from_logits)
    p, y = ref_all_rows(batches, ignore, from_logits)
    ece = run(ECE(n_bins, ignore_index=ignore, from_logits=from_logits), batches)
    mce = run(MCE(n_bins, ignore_index=ignore, from_logits=from_logits), batches)
    assert ece == pytest.approx(ref_ece(p, y, n_bins), abs=1e-12)
    assert mce == pytest.approx(ref_mce(p, y, n_bins), abs=1e-12)
    # batch-size independence: one batch of everything gives the same number
    whole = ECE(n_bins, ignore_index=ignore, from_logits=from_logits)
    for preds, target in batches[::-1]:
        whole.update(preds, target)
    assert whole.compute().item() == pytest.approx(ece, abs=1e-14)


def test_binning_changes_the_answer_and_is_matched():
    """Over- and under-confident bins: the ECE is far from |mean conf - accuracy|."""
    batches = make_batches("cls", None, seeds=(3, 4, 5))
    p, y = ref_all_rows(batches)
    conf, hit = p.max(1), p.argmax(1) == y
    b = ref_bin(conf, 15)
    signs = {np.sign(conf[b == k].mean() - hit[b == k].mean()) for k in range(15) if (b == k).any()}
    assert signs == {-1.0, 1.0}
    metric = ECE()
    ece = run(metric, batches)
    assert ece == pytest.approx(ref_ece(p, y), abs=1e-12)
    assert ece > abs(conf.mean() - hit.mean()) + 0.05
    count, conf_sum, correct = metric.count, metric.conf_sum, metric.correct_sum
    assert count.dtype == correct.dtype == torch.int64 and conf_sum.dtype == torch.float64
    assert count.tolist() == np.bincount(b, minlength=15).tolist()
    assert correct.tolist() == np.bincount(b[hit], minlength=15).tolist()
    np.testing.assert_allclose(conf_sum.numpy(), np.bincount(b, conf, minlength=15), rtol=1e-13)


def test_hand_computed_ece_mce():
    # confidences 0.875 (right), 0.625 (wrong), 0.75 (right, on the edge of (0.5, 0.75]),
    # 0.9375 (right); bins of width 1/4
    probs = torch.tensor([[0.125, 0.875], [0.625, 0.375], [0.25, 0.75], [0.9375, 0.0625]])
    target = torch.tensor([1, 1, 1, 0])
    ece = ECE(n_bins=4, from_logits=False)
    ece.update(probs, target)
    assert ece.count.tolist() == [0, 0, 2, 2]
    assert ece.compute().item() == 0.140625  # (|1.375 - 1| + |1.8125 - 2|) / 4
    mce = MCE(n_bins=4, from_logits=False)
    mce.update(probs, target)
    assert mce.compute().item() == 0.1875


def test_saturated_confidence_goes_to_the_last_bin():
    """Logit gaps of 100: confidence exactly 1.0 (float32 softmax too), counted in bin 14."""
    g = torch.Generator().manual_seed(7)
    n = 200
    z = torch.randn(n, C, generator=g)
    sat = torch.arange(n) < 120
    top = torch.randint(0, C, (n,), generator=g)
    z[sat] = 0.0
    z[sat, top[sat]] = 100.0
    y = torch.where(torch.rand(n, generator=g) < 0.9, z.argmax(1), (z.argmax(1) + 1) % C)
    assert bool((z[sat].softmax(1).max(1).values == 1.0).all())
    conf, _ = F.confidence_and_correct(z, y)
    assert bool((conf[sat] == 1.0).all())
    metric = ECE()
    metric.update(z[:77], y[:77])
    metric.update(z[77:], y[77:])
    p, yy = ref_rows(z, y)
    assert metric.compute().item() == pytest.approx(ref_ece(p, yy), abs=1e-12)
    n_last = int((ref_bin(p.max(1), 15) == 14).sum())
    assert metric.count[-1].item() == n_last >= 120
    assert metric.count.sum().item() == n  # no hidden extra bin


def test_ece_against_torchmetrics_away_from_one():
    """torchmetrics is exact on small data whose confidences stay below 1 and off the edges."""
    z, y = miscalibrated_logits((300,), seed=11)
    z = 3 * torch.tanh(z / 3)  # squash (no clamp: clamping would create ties)
    assert float(z.softmax(1).max()) < 0.999
    ours_l1, ours_max = ECE(), MCE()
    tm_l1 = MulticlassCalibrationError(num_classes=C, n_bins=15, norm="l1")
    tm_max = MulticlassCalibrationError(num_classes=C, n_bins=15, norm="max")
    for sl in (slice(0, 100), slice(100, 300)):
        for m in (ours_l1, ours_max, tm_l1, tm_max):
            m.update(z[sl], y[sl])
    assert ours_l1.compute().item() == pytest.approx(tm_l1.compute().item(), abs=2e-6)
    assert ours_max.compute().item() == pytest.approx(tm_max.compute().item(), abs=2e-6)
    top2 = TopKAccuracy(k=2)
    tm_top2 = MulticlassAccuracy(num_classes=C, top_k=2, average="micro")
    top2.update(z, y)
    tm_top2.update(z, y)
    assert top2.compute().item() == pytest.approx(tm_top2.compute().item(), abs=1e-6)


def test_temperature_grid_equals_scaled_reference():
    z, y = miscalibrated_logits((3, 6, 5), seed=21)
    y = with_void(y, 21)
    temps = torch.tensor([0.5, 1.0, 2.5])
    count, conf_sum, correct = F.binned_calibration_stats(z, y, 15, 255, temperature=temps)
    assert count.shape == conf_sum.shape == correct.shape == (3, 15)
    ece = F.ece_from_stats(count, conf_sum, correct)
    for k, t in enumerate(temps.tolist()):
        p, yy = ref_rows(z.double() / t, y, 255)
        assert ece[k].item() == pytest.approx(ref_ece(p, yy), abs=1e-12)
        single = F.binned_calibration_stats(z, y, 15, 255, temperature=t)
        assert torch.equal(single[0], count[k]) and torch.equal(single[2], correct[k])
    grid = F.ece_for_temperatures(z, y, temps, ignore_index=255)
    torch.testing.assert_close(grid, ece, rtol=0, atol=1e-15)


def test_shifted_path_for_huge_logits_is_exact():
    """Top logits outside [-600, 700] take the max-shifted path; same values."""
    z, y = miscalibrated_logits((50,), seed=5)
    z64 = z.double()
    shifted = z64 + 5000.0  # softmax-invariant, exp(z) would overflow
    conf_a, hit_a = F.confidence_and_correct(z64, y)
    conf_b, hit_b = F.confidence_and_correct(shifted, y)
    torch.testing.assert_close(conf_a, conf_b, rtol=1e-12, atol=0)
    assert torch.equal(hit_a, hit_b)
    p, yy = ref_rows(shifted, y)
    assert F.expected_calibration_error(shifted, y).item() == pytest.approx(ref_ece(p, yy), 1e-12)


def test_tie_counts_as_correct():
    """A target tied with the maximum is correct (argmax would take the first class only)."""
    z = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 3.0, 3.0]])
    y = torch.tensor([1, 2, 0])
    conf, correct = F.confidence_and_correct(z, y)
    assert correct.tolist() == [True, True, False]
    np.testing.assert_allclose(conf.numpy(), [1 / (2 + np.exp(-1)), 1 / 3, 1 / (2 + np.exp(-3))])
    top1 = TopKAccuracy(k=1)
    top1.update(z, y)
    assert top1.compute().item() == pytest.approx(2 / 3)
    ece = ECE(n_bins=10)
    ece.update(z, y)
    # rows 0 and 2 share the bin (0.4, 0.5], row 1 is in (0.3, 0.4]
    assert ece.count.tolist() == [0, 0, 0, 1, 2, 0, 0, 0, 0, 0]
    expected = (abs(conf[0] + conf[2] - 1) + abs(conf[1] - 1)).item() / 3
    assert ece.compute().item() == pytest.approx(expected, abs=1e-15)


# ----------------------------------------------------------------------------------------------
# adaptive, class-wise, image-wise, batch-averaged
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "ignore", "from_logits"), CASES)
def test_adaptive_ece_exact_equals_reference(kind, ignore, from_logits):
    batches = make_batches(kind, ignore, from_logits=from_logits)
    p, y = ref_all_rows(batches, ignore, from_logits)
    for n_bins in (15, 4):
        value = run(AdaptiveECE(n_bins, ignore_index=ignore, from_logits=from_logits), batches)
        assert value == pytest.approx(ref_aece(p, y, n_bins), abs=1e-12)
        one_shot = F.adaptive_calibration_error(
            torch.cat([b[0] for b in batches]) if kind == "cls" else batches[0][0],
            torch.cat([b[1] for b in batches]) if kind == "cls" else batches[0][1],
            n_bins,
            ignore,
            from_logits=from_logits,
        ).item()
        if kind == "cls":
            assert one_shot == pytest.approx(value, abs=1e-14)


def test_adaptive_first_bin_keeps_the_least_confident_row():
    """The public code drops the row at e_0; here it is in the first bin (the fix)."""
    # confidences 0.625 (wrong), 0.75, 0.875, 0.9375 (right); 2 bins: edges 0.625, 0.875, 0.9375
    probs = torch.tensor([[0.375, 0.625], [0.25, 0.75], [0.125, 0.875], [0.0625, 0.9375]])
    target = torch.tensor([0, 1, 1, 1])
    metric = AdaptiveECE(n_bins=2, from_logits=False)
    metric.update(probs, target)
    # bin 0 = {0.625 wrong, 0.75, 0.875}: |2.25 - 2|; bin 1 = {0.9375}: |0.9375 - 1|
    assert metric.compute().item() == (0.25 + 0.0625) / 4
    dropped = abs(1.625 - 2) + 0.0625  # what the public code sums (without the 0.625 row)
    assert metric.compute().item() != dropped / 4


def test_adaptive_ties_share_a_bin():
    conf = torch.tensor([0.5] * 6 + [0.9] * 2, dtype=torch.float64)
    correct = torch.tensor([1, 0, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    edges, count, _, _ = F.adaptive_bin_stats(conf, correct, 4)
    assert count.tolist() == [6, 0, 0, 2] or count.tolist() == [6, 0, 2, 0]
    assert count.sum().item() == 8
    p = np.stack([conf.numpy(), (1 - conf.numpy()) / 2, (1 - conf.numpy()) / 2], 1)
    y = np.where(correct.numpy(), 0, 1)
    probs = torch.from_numpy(p).float()
    assert F.adaptive_calibration_error(
        probs, torch.from_numpy(y), 4, from_logits=False
    ).item() == pytest.approx(ref_aece(probs.double().numpy(), y, 4), abs=1e-12)
    assert edges.tolist() == np.interp(np.linspace(0, 8, 5), np.arange(8), np.sort(conf)).tolist()


@pytest.mark.parametrize(("kind", "ignore", "from_logits"), CASES)
def test_classwise_ece_equals_reference(kind, ignore, from_logits):
    batches = make_batches(kind, ignore, from_logits=from_logits)
    p, y = ref_all_rows(batches, ignore, from_logits)
    value = run(ClasswiseECE(C, 10, ignore_index=ignore, from_logits=from_logits), batches)
    assert value == pytest.approx(ref_cece(p, y, 10), abs=1e-12)


def test_classwise_counts_classes_absent_from_the_labels():
    """num_classes is given: a class never labelled still contributes (its mean p vs 0)."""
    z, _ = miscalibrated_logits((80,), seed=9)
    y = torch.randint(0, 2, (80,), generator=torch.Generator().manual_seed(1))
    metric = ClasswiseECE(num_classes=C)
    metric.update(z, y)
    p, yy = ref_rows(z, y)
    assert metric.compute().item() == pytest.approx(ref_cece(p, yy), abs=1e-12)
    per_class = metric.compute_per_class()
    assert per_class.shape == (C,)
    for c in (2, 3, 4):  # no target: the class ECE is the mean probability of the class
        assert per_class[c].item() == pytest.approx(p[:, c].mean(), abs=1e-12)


def test_imagewise_ece_equals_reference_and_skips_empty_images():
    batches = make_batches("seg", 255)
    batches[1][1][2] = 255  # image with no valid pixel: skipped
    value = run(ImagewiseECE(ignore_index=255), batches)
    assert value == pytest.approx(ref_imagewise(batches, 255), abs=1e-12)
    n_images = sum(b[0].shape[0] for b in batches) - 1
    metric = ImagewiseECE(ignore_index=255)
    run(metric, batches)
    assert metric.n_images.item() == n_images
    # regrouping images into other batches changes nothing
    preds = torch.cat([b[0] for b in batches])
    target = torch.cat([b[1] for b in batches])
    regrouped = ImagewiseECE(ignore_index=255)
    for sl in (slice(0, 1), slice(1, 6)):
        regrouped.update(preds[sl], target[sl])
    assert regrouped.compute().item() == pytest.approx(value, abs=1e-14)


def test_batch_averaged_ece_equals_mbls_convention_and_depends_on_batching():
    batches = make_batches("seg", 255)
    value = run(BatchAveragedECE(ignore_index=255), batches)
    assert value == pytest.approx(ref_batch_averaged(batches, 255), abs=1e-12)
    preds = torch.cat([b[0] for b in batches])
    target = torch.cat([b[1] for b in batches])
    one_batch = BatchAveragedECE(ignore_index=255)
    one_batch.update(preds, target)
    p, y = ref_rows(preds, target, 255)
    keep = y != 0
    assert one_batch.compute().item() == pytest.approx(ref_ece(p[keep], y[keep]), abs=1e-12)
    assert abs(one_batch.compute().item() - value) > 1e-3  # batch-size dependent, as documented


# ----------------------------------------------------------------------------------------------
# NLL, Brier, top-k
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "ignore", "from_logits"), CASES)
def test_sum_metrics_equal_reference(kind, ignore, from_logits):
    batches = make_batches(kind, ignore, from_logits=from_logits)
    p, y = ref_all_rows(batches, ignore, from_logits)
    nll = run(NLL(ignore_index=ignore, from_logits=from_logits), batches)
    brier = run(BrierScore(C, ignore_index=ignore, from_logits=from_logits), batches)
    top1 = run(TopKAccuracy(1, ignore_index=ignore, from_logits=from_logits), batches)
    top3 = run(TopKAccuracy(3, ignore_index=ignore, from_logits=from_logits), batches)
    rtol = 1e-12 if from_logits else 1e-6  # probabilities were rounded to float32
    assert nll == pytest.approx(ref_nll(p, y), rel=rtol)
    assert brier == pytest.approx(ref_brier(p, y), rel=rtol)
    assert top1 == ref_topk(p, y, 1)
    assert top3 == ref_topk(p, y, 3)


def test_nll_matches_torch_cross_entropy():
    z, y = miscalibrated_logits((2, 8, 8), seed=3)
    y = with_void(y, 3)
    metric = NLL(ignore_index=255)
    metric.update(z[:1], y[:1])
    metric.update(z[1:], y[1:])
    expected = torch.nn.functional.cross_entropy(z.double(), y, ignore_index=255).item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)


def test_functional_one_shots_equal_the_classes():
    z, y = miscalibrated_logits((4, 6, 6), seed=8)
    y = with_void(y, 8)
    pairs = [
        (F.expected_calibration_error(z, y, 15, 255), ECE(ignore_index=255)),
        (F.maximum_calibration_error(z, y, 15, 255), MCE(ignore_index=255)),
        (F.classwise_calibration_error(z, y, C, 15, 255), ClasswiseECE(C, ignore_index=255)),
        (F.imagewise_calibration_error(z, y, 15, 255), ImagewiseECE(ignore_index=255)),
        (F.negative_log_likelihood(z, y, 255), NLL(ignore_index=255)),
        (F.brier_score(z, y, 255), BrierScore(ignore_index=255)),
        (F.topk_accuracy(z, y, 2, 255), TopKAccuracy(2, ignore_index=255)),
    ]
    for value, metric in pairs:
        metric.update(z, y)
        assert value.item() == pytest.approx(metric.compute().item(), abs=1e-15)
