"""Streaming adaptive ECE: the stated error bound holds against the exact value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_calib.metrics import AdaptiveECE
from lightning_calib.metrics import functional as F


def seg_like(n, seed):
    """Confidences piled up near 1 (1 - conf log-uniform in [1e-7, 0.63]), as on VOC pixels."""
    g = torch.Generator().manual_seed(seed)
    conf = 1 - 10 ** torch.empty(n, dtype=torch.float64).uniform_(-7, -0.2, generator=g)
    acc = (conf - 0.05 * torch.sin(6 * conf)).clamp(0, 1)
    return conf, torch.rand(n, generator=g, dtype=torch.float64) < acc


def cls_like(n, seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.empty(n, dtype=torch.float64).uniform_(0.1, 1.0, generator=g)
    return conf, torch.rand(n, generator=g, dtype=torch.float64) < conf**1.3


def ties_and_saturation(n, seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64).mul(1000).round().div(1000)
    conf[torch.rand(n, generator=g) < 0.3] = 1.0
    conf = conf.clamp(min=0.001)
    return conf, torch.rand(n, generator=g, dtype=torch.float64) < conf * 0.9


def tiny(n, seed):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=g, dtype=torch.float64)
    return conf, torch.rand(n, generator=g, dtype=torch.float64) < 0.5


def exact_aece(conf, correct, n_bins):
    _, count, conf_sum, correct_sum = F.adaptive_bin_stats(conf, correct, n_bins)
    return F.ece_from_stats(count, conf_sum, correct_sum).item()


def streaming(conf, correct, n_bins, resolution):
    count, conf_sum = F.streaming_fine_stats(conf, correct, None, resolution)
    value, bound, _ = F.streaming_adaptive_ece(count, conf_sum, n_bins)
    return value.item(), bound.item()


@pytest.mark.parametrize(
    ("data", "n", "resolution", "max_bound"),
    [
        (seg_like, 400_000, 1024, 1e-4),
        (seg_like, 400_000, 16, 5e-3),
        (cls_like, 50_000, 1024, 5e-3),
        (cls_like, 50_000, 4096, 2e-3),
        (ties_and_saturation, 20_000, 1024, 1e-2),
        (tiny, 9, 2, None),
    ],
)
@pytest.mark.parametrize("n_bins", [15, 5])
def test_streaming_error_is_within_the_bound(data, n, resolution, max_bound, n_bins):
    for seed in range(2):
        conf, correct = data(n, seed)
        value, bound = streaming(conf, correct, n_bins, resolution)
        exact = exact_aece(conf, correct, n_bins)
        assert abs(value - exact) <= bound + 1e-12
        if max_bound is not None:
            assert bound <= max_bound  # informative, not just true


def test_bound_is_attained_in_order_of_magnitude_when_rows_straddle_an_edge():
    """Two edges cut one sub-bin whose rows have opposite gaps: the bound is not vacuous."""
    conf = torch.tensor([0.30, 0.3001, 0.3002, 0.3003, 0.9, 0.95], dtype=torch.float64)
    correct = torch.tensor([True, False, True, False, True, True])
    value, bound = streaming(conf, correct, n_bins=3, resolution=2)
    exact = exact_aece(conf, correct, 3)
    assert abs(value - exact) <= bound
    assert abs(value - exact) > 0.0  # the coarse grid really misassigns here


def test_a_priori_bound():
    """bound <= 2 (n - 1) / N * max_j sum_{i in j} |conf_i - c_i|: one straddler per edge."""
    conf, correct = cls_like(30_000, 5)
    res, n_bins = 64, 15
    count, conf_sum = F.streaming_fine_stats(conf, correct, None, res)
    w = (count[:, 1] - conf_sum[:, 1]) + conf_sum[:, 0]
    _, bound, _ = F.streaming_adaptive_ece(count, conf_sum, n_bins)
    assert bound.item() <= 2 * (n_bins - 1) / conf.numel() * w.max().item() + 1e-15


def test_sub_bins_are_monotone_and_bounded():
    conf = torch.sort(torch.rand(10_000, dtype=torch.float64)).values
    conf = torch.cat(
        [torch.zeros(1, dtype=torch.float64), conf, torch.ones(1, dtype=torch.float64)]
    )
    idx = F.fine_bin_index(conf, 256)
    assert bool((idx[1:] >= idx[:-1]).all())
    lower, upper = F.fine_bin_bounds(256)
    inner = conf[1:-1]
    j = idx[1:-1]
    assert bool((inner > lower[j]).all() and (inner <= upper[j]).all())
    assert lower[-1] == upper[-1] == 1.0 and idx[-1] == lower.numel() - 1
    # relative width in 1 - conf is 1/resolution above 1/2 (where 1 - conf is resolved)
    mask = (lower > 0.5) & (upper < 1.0 - 2**-30)
    rel = (upper - lower)[mask] / (1 - upper[mask])
    assert float(rel.max()) <= 1 / 256 * 1.0001


def test_metric_class_streaming_over_batches_and_ignore():
    """The class: logits of dense batches with void pixels, several updates, exact vs streaming."""
    g = torch.Generator().manual_seed(3)
    batches = []
    for n in (2, 3, 1):
        z = torch.randn(n, 6, 20, 20, generator=g) * torch.empty(n, 1, 20, 20).uniform_(
            0.5, 5, generator=g
        )
        y = torch.where(
            torch.rand(n, 20, 20, generator=g) < 0.7,
            z.argmax(1),
            torch.randint(0, 6, (n, 20, 20), generator=g),
        )
        y[torch.rand(n, 20, 20, generator=g) < 0.1] = 255
        batches.append((z, y))
    exact = AdaptiveECE(ignore_index=255)
    stream = AdaptiveECE(mode="streaming", resolution=256, ignore_index=255)
    one_batch = AdaptiveECE(mode="streaming", resolution=256, ignore_index=255)
    for z, y in batches:
        exact.update(z, y)
        stream.update(z, y)
    one_batch.update(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    assert torch.equal(stream.fine_count, one_batch.fine_count)
    assert stream.compute().item() == pytest.approx(one_batch.compute().item(), abs=1e-15)
    gap = abs(stream.compute().item() - exact.compute().item())
    assert gap <= stream.error_bound().item() + 1e-12
    assert exact.error_bound().item() == 0.0
    n_valid = sum(int((y != 255).sum()) for _, y in batches)
    assert int(stream.fine_count.sum()) == n_valid == sum(t.numel() for t in exact.confidences)
    assert np.isfinite(stream.compute().item())
