"""Temperature search at pixel scale: a fixed, position-keyed pixel subset.

The subset is a function of the pixel position alone, so the chosen temperature does not
depend on how the images are batched or split across processes; on a test input it equals the
temperature of the exact full-pixel search (or sits one grid step away; measured below).
"""

from __future__ import annotations

import functools

import pytest
import torch

from lightning_calib.temperature import TemperatureGrid, position_sample


def overconfident_dense(n=24, k=6, h=96, w=80, t_true=2.5, seed=0, void=255):
    """Logits whose calibrated temperature is about ``t_true``: labels drawn from
    ``softmax(z)``, logits returned as ``z * t_true`` (over-confident)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, h, w, generator=g) * 1.5
    # smooth the logit maps a little so neighbouring pixels correlate, as in real images
    z = torch.nn.functional.avg_pool2d(z, 3, stride=1, padding=1) * 3
    p = z.softmax(1).movedim(1, -1).reshape(-1, k)
    y = torch.multinomial(p, 1, generator=g).view(n, h, w)
    y[:, :3, :] = void
    return z * t_true, y


@functools.cache
def full_search(criterion):
    return best_temperature(*overconfident_dense(), 1.0, criterion)


def best_temperature(logits, target, fraction, criterion, batch=4):
    grid = TemperatureGrid((0.1, 10.0, 0.1), criterion=criterion, ignore_index=255,
                           pixel_fraction=fraction)  # fmt: skip
    for i in range(0, len(logits), batch):
        grid.update(logits[i : i + batch], target[i : i + batch])
    return float(grid.compute())


def test_position_sample_is_a_fixed_scattered_fraction():
    m = position_sample(480, 480, 1 / 64, torch.device("cpu"))
    assert m.dtype == torch.bool and m.shape == (480, 480)
    assert int(m.sum()) == pytest.approx(480 * 480 / 64, rel=0.05)
    assert torch.equal(m, position_sample(480, 480, 1 / 64, torch.device("cpu")))
    # scattered: every row and every column band holds sampled pixels
    assert (m.view(30, 16, 480).sum((1, 2)) > 0).all()
    assert (m.view(480, 30, 16).sum((0, 2)) > 0).all()
    assert position_sample(1, 1, 1e-6, torch.device("cpu")).all()  # never empty


@pytest.mark.parametrize("fraction", [1 / 64, None], ids=["1/64", "default"])
@pytest.mark.parametrize("criterion", ["ece", "nll"])
def test_subsampled_search_agrees_with_the_full_search(criterion, fraction):
    logits, target = overconfident_dense()
    full = full_search(criterion)
    sampled = best_temperature(logits, target, fraction, criterion)
    assert full == pytest.approx(2.5, abs=0.5)  # the input is what it claims to be
    assert abs(sampled - full) <= 0.1 + 1e-6, (sampled, full)


def test_subsampled_search_does_not_depend_on_batching():
    logits, target = overconfident_dense(n=12, seed=1)
    values = {best_temperature(logits, target, 1 / 64, "ece", batch=b) for b in (1, 5, 12)}
    assert len(values) == 1
    # two "processes" holding alternate images: their summed states give the same T
    shards = [
        TemperatureGrid(criterion="ece", ignore_index=255, pixel_fraction=1 / 64) for _ in range(2)
    ]
    for i in range(len(logits)):
        shards[i % 2].update(logits[i : i + 1], target[i : i + 1])
    merged = TemperatureGrid(criterion="ece", ignore_index=255, pixel_fraction=1 / 64)
    for name in ("count", "conf_sum", "correct_sum", "nll_sum"):
        setattr(merged, name, getattr(shards[0], name) + getattr(shards[1], name))
    assert float(merged.compute()) == values.pop()


def test_classification_rows_are_never_subsampled():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(300, 5, generator=g) * 4, torch.randint(0, 5, (300,), generator=g)
    a = TemperatureGrid(criterion="nll", pixel_fraction=1 / 64)
    b = TemperatureGrid(criterion="nll", pixel_fraction=1.0)
    a.update(z, y)
    b.update(z, y)
    assert torch.equal(a.nll_sum, b.nll_sum) and int(a.count[0].sum()) == 300


def test_default_keeps_about_1024_positions_per_image():
    grid = TemperatureGrid()
    assert grid.fraction_for((480, 480)) == pytest.approx(1024 / 480**2)
    assert grid.fraction_for((16, 16)) == 1.0  # small images: every pixel
    kept = position_sample(480, 480, grid.fraction_for((480, 480)), torch.device("cpu"))
    assert int(kept.sum()) == pytest.approx(1024, rel=0.1)
    assert TemperatureGrid(pixel_fraction=0.5).fraction_for((480, 480)) == 0.5
    with pytest.raises(ValueError, match="positions_per_image"):
        TemperatureGrid(positions_per_image=0)


def test_bad_pixel_fraction_is_refused():
    with pytest.raises(ValueError, match="pixel_fraction"):
        TemperatureGrid(pixel_fraction=0.0)
