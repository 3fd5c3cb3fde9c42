"""Metric-object behaviour: states, pickling, reset, dtypes, validation, warnings, plots.

The metrics come from the registry ``tests/metric_cases.py``; the tests parametrized by
``NAMES`` run on every registered metric.
"""

from __future__ import annotations

import copy
import functools
import math
import pickle
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from metric_cases import BY_NAME, CASES, NAMES
from torchmetrics import Metric, MetricCollection

import lightning_calib.metrics
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

C = 4
#: name -> a fresh metric with C classes and ignore_index=255, for every registered metric
FACTORIES = {case.name: functools.partial(case.make, C, 255) for case in CASES}


def seg_batch(seed, n=2, h=6, w=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, C, h, w, generator=g) * 2.5).to(dtype)
    y = torch.randint(0, C, (n, h, w), generator=g)
    y[torch.rand(n, h, w, generator=g) < 0.15] = 255
    return z, y


BATCHES = [seg_batch(0), seg_batch(1, n=3), seg_batch(2, n=1)]


def _state_dtypes(metric):
    return {k: v.dtype for k, v in metric.metric_state.items() if isinstance(v, torch.Tensor)}


def fed(name):
    metric = FACTORIES[name]()
    for z, y in BATCHES:
        metric.update(z, y)
    return metric


# ----------------------------------------------------------------------------------------------
# declared behaviour and states
# ----------------------------------------------------------------------------------------------


def test_every_exported_metric_is_registered():
    """A new public metric class must get a registry entry (tests/metric_cases.py)."""
    exported = {
        obj
        for obj in (getattr(lightning_calib.metrics, n) for n in lightning_calib.metrics.__all__)
        if isinstance(obj, type) and issubclass(obj, Metric)
    }
    registered = {case.cls for case in CASES}
    assert ECE in exported and TopKAccuracy in exported  # the scan itself works
    assert exported - registered == set(), "add these metrics to tests/metric_cases.py"
    assert registered <= exported


@pytest.mark.parametrize("name", NAMES)
def test_class_attributes(name):
    metric = FACTORIES[name]()
    assert metric.is_differentiable is False
    assert metric.full_state_update is False
    assert metric.higher_is_better is BY_NAME[name].higher_is_better
    assert metric.plot_lower_bound == 0.0
    assert metric.plot_upper_bound == BY_NAME[name].plot_upper_bound


def test_registry_declares_the_attributes_of_the_classes():
    """The registry's expectations themselves, so that the test above cannot drift with them."""
    assert [c.name for c in CASES if c.higher_is_better] == ["TopKAccuracy"]
    upper = {c.name: c.plot_upper_bound for c in CASES if c.plot_upper_bound != 1.0}
    assert upper == {"NLL": None, "BrierScore": 2.0}
    assert [c.name for c in CASES if c.list_states] == ["AdaptiveECE"]
    assert [c.name for c in CASES if c.takes_num_classes] == ["ClasswiseECE", "BrierScore"]


@pytest.mark.parametrize("name", NAMES)
def test_states_are_exact_dtypes_and_sum_reduced(name):
    metric = fed(name)
    for state, reduction in metric._reductions.items():
        value = getattr(metric, state)
        if isinstance(value, list):  # exact AdaptiveECE only
            assert BY_NAME[name].list_states and reduction.__name__ == "dim_zero_cat"
            continue
        assert reduction.__name__ == "dim_zero_sum", state
        assert value.dtype in (torch.float64, torch.int64), state


def test_binned_state_size_does_not_grow_with_the_data():
    metric = ECE(n_bins=15, ignore_index=255)
    for seed in range(4):
        metric.update(*seg_batch(seed, n=4, h=32, w=32))
    assert [tuple(getattr(metric, s).shape) for s in metric._defaults] == [(15,)] * 3
    targets = torch.cat([seg_batch(s, 4, 32, 32)[1] for s in range(4)])
    assert metric.count.sum().item() == int((targets != 255).sum())
    streaming = AdaptiveECE(mode="streaming", resolution=64)
    assert streaming.fine_count.shape == (F.STREAMING_OCTAVES * 64 + 1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_updates_are_out_of_place(name):
    """``self.x = self.x + ...``: shared-memory states (ddp_spawn) must not be added in place."""
    metric = FACTORIES[name]()
    tensors = {k: v for k, v in metric.metric_state.items() if isinstance(v, torch.Tensor)}
    for v in tensors.values():
        v.share_memory_()
    before = {k: v.clone() for k, v in tensors.items()}
    metric.update(*BATCHES[0])
    for k, v in tensors.items():
        assert torch.equal(v, before[k]), f"{k} was modified in place"
        assert getattr(metric, k) is not v


@pytest.mark.parametrize("name", NAMES)
def test_pickle_deepcopy_clone_and_reset(name):
    metric = fed(name)
    value = metric.compute().item()
    for other in (pickle.loads(pickle.dumps(metric)), copy.deepcopy(metric), metric.clone()):
        assert other.compute().item() == value
        other.update(*BATCHES[0])  # the copy keeps working and is independent
    assert metric.compute().item() == value
    metric.reset()
    metric.update(*BATCHES[2])
    single = FACTORIES[name]()
    single.update(*BATCHES[2])
    assert metric.compute().item() == pytest.approx(single.compute().item(), abs=0, nan_ok=True)


@pytest.mark.parametrize("name", NAMES)
def test_compute_before_update_warns_and_returns_nan(name):
    metric = FACTORIES[name]()
    with pytest.warns(UserWarning, match="before the ``update``"):
        value = metric.compute()
    assert math.isnan(value.item())


@pytest.mark.parametrize("name", NAMES)
def test_all_rows_ignored_gives_nan_without_warning(name):
    z, y = seg_batch(3)
    metric = FACTORIES[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.update(z, torch.full_like(y, 255))
        assert math.isnan(metric.compute().item())


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_is_a_no_op(name):
    metric = fed(name)
    value = metric.compute().item()
    dtypes = _state_dtypes(metric)
    z, y = BATCHES[0]
    metric.update(z[:0], y[:0])
    assert metric.compute().item() == value
    assert _state_dtypes(metric) == dtypes


@pytest.mark.parametrize("name", NAMES)
def test_forward_returns_the_batch_value_and_accumulates(name):
    metric = FACTORIES[name]()
    batch_values = [metric(z, y).item() for z, y in BATCHES]
    for (z, y), value in zip(BATCHES, batch_values):
        alone = FACTORIES[name]()
        alone.update(z, y)
        assert value == pytest.approx(alone.compute().item(), abs=1e-15)
    assert metric.compute().item() == pytest.approx(fed(name).compute().item(), abs=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_set_dtype_keeps_the_exact_accumulators(name):
    metric = fed(name)
    value = metric.compute().item()
    dtypes = {k: v.dtype for k, v in metric.metric_state.items() if isinstance(v, torch.Tensor)}
    metric.set_dtype(torch.float32)
    metric.half()
    assert {
        k: v.dtype for k, v in metric.metric_state.items() if isinstance(v, torch.Tensor)
    } == dtypes
    metric.update(*BATCHES[0])
    metric.reset()
    for z, y in BATCHES:
        metric.update(z, y)
    assert metric.compute().item() == value


def test_metric_collection_with_compute_groups():
    collection = MetricCollection(
        {"ece": ECE(ignore_index=255), "mce": MCE(ignore_index=255), "nll": NLL(ignore_index=255)}
    )
    for z, y in BATCHES:
        collection.update(z, y)
    values = collection.compute()
    assert values["ece"].item() == fed("ECE").compute().item()
    assert values["mce"].item() == fed("MCE").compute().item()
    assert values["nll"].item() == fed("NLL").compute().item()


# ----------------------------------------------------------------------------------------------
# input dtypes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_low_and_high_precision_inputs(name, dtype):
    """Any float dtype: the value is that of the same numbers given as float64."""
    batches = [seg_batch(s, dtype=dtype) for s in range(3)]
    metric, reference = FACTORIES[name](), FACTORIES[name]()
    for z, y in batches:
        metric.update(z, y)
        reference.update(z.double(), y)
    assert metric.compute().item() == pytest.approx(reference.compute().item(), abs=1e-14)


@pytest.mark.filterwarnings("error")
def test_functional_api_accepts_tensors_that_require_grad():
    z, y = seg_batch(9)
    z = z.requires_grad_()
    assert F.expected_calibration_error(z, y, 15, 255).isfinite()
    assert F.classwise_calibration_error(z, y, C, 15, 255).isfinite()
    assert F.negative_log_likelihood(z, y, 255).isfinite()
    assert F.brier_score(z, y, 255).isfinite()
    assert z.grad is None


def test_uint8_targets():
    z, y = seg_batch(4)
    a, b = ECE(ignore_index=255), ECE(ignore_index=255)
    a.update(z, y)
    b.update(z, y.to(torch.uint8))
    assert a.compute().item() == b.compute().item()


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_invalid_inputs_raise_value_errors(name):
    z, y = seg_batch(5)
    cases = [
        ((z, y[:, :-1]), r"target.*shape"),  # shape mismatch
        ((z[:, 0], y), r"shape"),  # wrong rank for the target
        ((z.long(), y), r"floating point"),
        ((z, y.float()), r"integer"),
        ((z, y.masked_fill(y == 1, C)), rf"value {C}.*\[0, {C}\)"),  # target out of range
        ((z.masked_fill(y.unsqueeze(1) == 0, float("nan")), y), r"finite.*NaN"),
        ((z.masked_fill(y.unsqueeze(1) == 0, float("inf")), y), r"finite.*infinite"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            FACTORIES[name]().update(*args)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.takes_num_classes])
def test_class_count_mismatch(name):
    z, y = seg_batch(6)
    metric = FACTORIES[name]()
    with pytest.raises(ValueError, match=rf"{C + 1} classes.*num_classes={C}"):
        metric.update(torch.cat([z, z[:, :1]], 1), y)


def test_probabilities_out_of_range_and_other_specific_checks():
    z, y = seg_batch(7)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        ECE(from_logits=False, ignore_index=255).update(z, y)
    with pytest.raises(ValueError, match="dense predictions"):
        ImagewiseECE().update(z[:, :, 0, 0], y[:, 0, 0])
    with pytest.raises(ValueError, match="at most the number of classes"):
        TopKAccuracy(k=C + 1, ignore_index=255).update(z, y)
    with pytest.raises(ValueError, match="temperature"):
        F.binned_calibration_stats(z, y, ignore_index=255, temperature=0.0)
    with pytest.raises(ValueError, match="needs from_logits=True"):
        F.binned_calibration_stats(
            z.softmax(1), y, ignore_index=255, temperature=2.0, from_logits=False
        )


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ECE(n_bins=0), "n_bins"),
        (lambda: MCE(n_bins=2.5), "n_bins"),
        (lambda: ECE(ignore_index=1.5), "ignore_index"),
        (lambda: ECE(from_logits=1), "from_logits"),
        (lambda: ECE(validate_args="yes"), "validate_args"),
        (lambda: AdaptiveECE(mode="fast"), "mode"),
        (lambda: AdaptiveECE(mode="streaming", resolution=1000), "resolution"),
        (lambda: ClasswiseECE(num_classes=0), "num_classes"),
        (lambda: TopKAccuracy(k=0), "`k`"),
        (lambda: BatchAveragedECE(exclude_classes=("bg",)), "exclude_classes"),
    ],
)
def test_invalid_constructor_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_validate_args_false_skips_the_checks():
    z, y = seg_batch(8)
    z = z.masked_fill(y.unsqueeze(1) == 255, float("nan"))  # NaN only on ignored pixels
    with pytest.raises(ValueError, match="finite"):
        ECE(ignore_index=255).update(z, y)
    fast = ECE(ignore_index=255, validate_args=False)
    fast.update(z, y)  # no check: NaN rows are ignored anyway
    clean = ECE(ignore_index=255)
    clean.update(z.nan_to_num(0.0), y)
    assert fast.compute().item() == pytest.approx(clean.compute().item(), abs=1e-15)


# ----------------------------------------------------------------------------------------------
# plots and reliability data
# ----------------------------------------------------------------------------------------------


def _bars(ax, label):
    return [c for c in ax.containers if c.get_label() == label]


@pytest.mark.parametrize("name", ["ECE", "MCE"])
def test_reliability_diagram_draws_one_bar_per_non_empty_bin(name):
    metric = fed(name)
    fig, axes = metric.plot()
    rel_ax, hist_ax = axes
    non_empty = int((metric.count > 0).sum())
    assert 0 < non_empty < 15
    (acc_bars,) = _bars(rel_ax, "Accuracy")
    (gap_bars,) = _bars(rel_ax, "Gap")
    (hist_bars,) = _bars(hist_ax, "Rows")
    assert len(acc_bars) == len(gap_bars) == non_empty
    assert len(hist_bars) == 15
    data = metric.reliability()
    full = data["count"] > 0
    heights = [b.get_height() for b in acc_bars]
    np.testing.assert_allclose(heights, data["accuracy"][full].numpy())
    tops = [b.get_y() + b.get_height() for b in gap_bars]  # gap bars end at the mean confidence
    np.testing.assert_allclose(tops, data["confidence"][full].numpy())
    np.testing.assert_allclose(sum(b.get_height() for b in hist_bars), 1.0)
    assert f"{metric.compute().item():.4f}" in rel_ax.get_title()
    plt.close(fig)


def test_plot_on_a_given_axes_and_value_plots():
    fig, ax = plt.subplots()
    metric = fed("ECE")
    out_fig, out_ax = metric.plot(ax=ax)
    assert out_fig is fig and out_ax is ax
    assert len(_bars(ax, "Accuracy")[0]) == int((metric.count > 0).sum())
    assert len(ax.child_axes) == 1  # the histogram inset
    plt.close(fig)
    for name in ("NLL", "ImagewiseECE", "TopKAccuracy", "ECE"):
        metric = fed(name)
        fig, ax = metric.plot(metric.compute())  # torchmetrics' value plot
        assert len(ax.lines) >= 1
        plt.close(fig)


@pytest.mark.parametrize("mode", ["exact", "streaming"])
def test_adaptive_plot_uses_equal_mass_bins(mode):
    metric = AdaptiveECE(n_bins=5, mode=mode, ignore_index=255)
    for z, y in BATCHES:
        metric.update(z, y)
    fig, (rel_ax, hist_ax) = metric.plot()
    (acc_bars,) = _bars(rel_ax, "Accuracy")
    (hist_bars,) = _bars(hist_ax, "Rows")
    fractions = [b.get_height() for b in hist_bars]
    assert len(acc_bars) == 5
    n = sum(int((y != 255).sum()) for _, y in BATCHES)
    assert max(fractions) - min(fractions) <= 2.0 / n + 1e-12  # equal mass, up to rounding
    lefts = [b.get_x() for b in acc_bars]
    assert lefts == sorted(lefts)
    plt.close(fig)


def test_classwise_plot_per_class_and_pooled():
    metric = fed("ClasswiseECE")
    fig, (rel_ax, _) = metric.plot(class_index=1)
    assert len(_bars(rel_ax, "Accuracy")[0]) == int((metric.count[1] > 0).sum())
    plt.close(fig)
    fig, (rel_ax, _) = metric.plot()
    assert len(_bars(rel_ax, "Accuracy")[0]) == int((metric.count.sum(0) > 0).sum())
    plt.close(fig)
