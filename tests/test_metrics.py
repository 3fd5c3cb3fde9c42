"""Every metric against its independent float64 NumPy reference, over several batches.

The references are in ``tests/metric_refs.py``, the metrics and their tolerances in the
registry ``tests/metric_cases.py``: the generic tests below run every registered metric on
classification and dense batches, with and without ``ignore_index``, from logits and from
probabilities. The tests after them are specific to one metric (hand-computed values, ties,
saturated confidences, conventions).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_cases import CASES, CLASSIFICATION, DENSE
from metric_refs import (
    ref_aece,
    ref_all_rows,
    ref_batch_averaged,
    ref_bin,
    ref_cece,
    ref_ece,
    ref_imagewise,
    ref_rows,
)
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from lightning_calib.metrics import (
    ECE,
    MCE,
    NLL,
    AdaptiveECE,
    BatchAveragedECE,
    ClasswiseECE,
    ImagewiseECE,
    TopKAccuracy,
)
from lightning_calib.metrics import functional as F

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


#: (batch kind, ignore_index, from_logits) of the data every registered metric is run on
DATA = [
    pytest.param("cls", None, True, id="cls"),
    pytest.param("cls", -100, True, id="cls-ignore"),
    pytest.param("seg", 255, True, id="seg-ignore"),
    pytest.param("seg", None, False, id="seg-probs"),
]
INPUT_KIND = {"cls": CLASSIFICATION, "seg": DENSE}


def _over_data(cases, with_variants=False):
    """``pytest.param(case, [variant,] kind, ignore, from_logits)`` for the inputs it accepts."""
    out = []
    for case in cases:
        for variant in case.variants if with_variants else [{}]:
            for data in DATA:
                kind = data.values[0]
                if INPUT_KIND[kind] not in case.inputs:
                    continue
                suffix = "".join(f"-{k}={v}" for k, v in variant.items())
                head = (case, variant) if with_variants else (case,)
                out.append(pytest.param(*head, *data.values, id=f"{case.name}{suffix}-{data.id}"))
    return out


def concatenated(batches):
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


# ----------------------------------------------------------------------------------------------
# every registered metric
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "variant", "kind", "ignore", "from_logits"),
    _over_data(CASES, with_variants=True),
)
def test_value_equals_reference_over_several_batches(case, variant, kind, ignore, from_logits):
    batches = make_batches(kind, ignore, from_logits=from_logits)
    metric = case.make(C, ignore, from_logits=from_logits, **variant)
    value = run(metric, batches)
    assert value == case.approx(metric, case.reference(metric, batches))
    if case.unit == "batch":
        return  # batch-size dependent by design (see the BatchAveragedECE test)
    # batch-order and batch-size independence: other batchings give the same number
    reordered = case.make(C, ignore, from_logits=from_logits, **variant)
    assert run(reordered, batches[::-1]) == pytest.approx(value, abs=1e-14)
    one_batch = case.make(C, ignore, from_logits=from_logits, **variant)
    assert run(one_batch, [concatenated(batches)]) == pytest.approx(value, abs=1e-14)


@pytest.mark.parametrize("case", [c for c in CASES if c.functional], ids=lambda c: c.name)
def test_functional_one_shots_equal_the_classes(case):
    z, y = miscalibrated_logits((4, 6, 6), seed=8)
    y = with_void(y, 8)
    metric = case.make(C, 255)
    value = case.functional(metric, z, y)
    metric.update(z, y)
    assert value.item() == pytest.approx(metric.compute().item(), abs=1e-15)


@pytest.mark.parametrize(
    ("case", "kind", "ignore", "from_logits"), _over_data([c for c in CASES if c.functional])
)
def test_functional_one_shot_of_concatenated_batches(case, kind, ignore, from_logits):
    batches = make_batches(kind, ignore, from_logits=from_logits)
    metric = case.make(C, ignore, from_logits=from_logits)
    one_shot = case.functional(metric, *concatenated(batches)).item()
    metric.update(*concatenated(batches))
    assert one_shot == pytest.approx(metric.compute().item(), abs=1e-15)
    if case.unit != "batch":
        several = run(case.make(C, ignore, from_logits=from_logits), batches)
        assert one_shot == pytest.approx(several, abs=1e-14)


# ----------------------------------------------------------------------------------------------
# equal-width binned metrics
# ----------------------------------------------------------------------------------------------


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
# NLL
# ----------------------------------------------------------------------------------------------


def test_nll_matches_torch_cross_entropy():
    z, y = miscalibrated_logits((2, 8, 8), seed=3)
    y = with_void(y, 3)
    metric = NLL(ignore_index=255)
    metric.update(z[:1], y[:1])
    metric.update(z[1:], y[1:])
    expected = torch.nn.functional.cross_entropy(z.double(), y, ignore_index=255).item()
    assert metric.compute().item() == pytest.approx(expected, rel=1e-12)
