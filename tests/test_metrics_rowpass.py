"""The shared pass of a metric set (``row_pass``): one pass per batch, the numbers of each
member alone, and each per-row quantity against an independent float64 NumPy computation.

* class-wise bins from the sparse selection (only probabilities above ``1/B`` binned) equal
  binning every probability (NumPy), at bin edges too and with several bin counts at once;
* labels (the arg-max, first maximum, from the weighted indicator sum) equal ``argmax`` on ties,
  on logits so small that their differences vanish in float64, and with or without the
  class-wise bins in the same pass (beyond ``B`` classes the top probability is below the
  class-wise threshold);
* a segmentation set updated through the pass gives exactly the values of its members updated
  alone, over several batches with void pixels; the set passes over each batch once.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_refs import ref_bin, ref_rows

from lightning_calib.metrics import functional as F
from lightning_calib.metrics.presets import segmentation_metrics

VOID = 255


def dense_batch(n=3, c=6, h=7, w=9, scale=3.0, seed=0, void_rows=2):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, h, w, generator=g) * scale
    t = torch.randint(0, c, (n, h, w), generator=g)
    t[:, :void_rows] = VOID
    return z, t


def ref_classwise(p, y, n_bins):
    """(count, conf_sum, correct_sum), each (C, n_bins), binning every probability."""
    c = p.shape[1]
    count = np.zeros((c, n_bins), np.int64)
    conf_sum = np.zeros((c, n_bins))
    hits = np.zeros((c, n_bins), np.int64)
    for k in range(c):
        b = ref_bin(p[:, k], n_bins)
        np.add.at(count[k], b, 1)
        np.add.at(conf_sum[k], b, p[:, k])
        np.add.at(hits[k], b[y == k], 1)
    return count, conf_sum, hits


@pytest.mark.parametrize("bins", [(15,), (4,), (15, 4, 40)])
@pytest.mark.parametrize("c", [3, 6, 21, 40])
def test_sparse_classwise_bins_equal_binning_every_probability(c, bins):
    z, t = dense_batch(c=c, seed=c)
    rows = F.row_pass(z, t, VOID, classwise_bins=bins)
    p, y = ref_rows(z, t, VOID)
    for n_bins in bins:
        count, conf_sum, hits = (x.numpy() for x in rows.classwise[n_bins])
        ref_count, ref_sum, ref_hits = ref_classwise(p, y, n_bins)
        np.testing.assert_array_equal(count, ref_count)
        np.testing.assert_array_equal(hits, ref_hits)
        np.testing.assert_allclose(conf_sum, ref_sum, rtol=1e-12, atol=1e-12)
        assert count.sum() == c * len(y)  # every probability of every valid row, once


def test_classwise_probabilities_on_bin_edges_follow_bin_index():
    # probabilities exactly 1/4, 1/2 and 3/4 (bins are right-closed), and 1/15 at B = 15
    probs = torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.25, 0.25], [1 / 15, 14 / 15, 0.0]])
    z = probs.clamp_min(1e-30).log()  # logits whose softmax gives these probabilities
    target = torch.tensor([1, 0, 1])
    for n_bins in (4, 15):
        rows = F.row_pass(z.double(), target, None, classwise_bins=(n_bins,))
        p, y = ref_rows(z.double(), target)
        for got, want in zip(rows.classwise[n_bins], ref_classwise(p, y, n_bins)):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("classwise", [True, False], ids=["with-classwise", "alone"])
def test_labels_are_the_first_maximum(classwise):
    z, t = dense_batch(c=5, seed=3)
    z[0, 2] = z[0, 4] = 9.0  # image 0: classes 2 and 4 tie at the maximum everywhere
    z[1] = torch.randn(5, 7, 9) * 1e-30  # image 1: exp(z - max z) rounds to 1 for all classes
    z[2, :, 0, 0] = 0.0  # a row of five tied classes
    z40, t40 = dense_batch(c=40, scale=0.05, seed=4)  # flat: top probability below 1/15
    bins = (15,) if classwise else ()
    for logits, target in ((z, t), (z40, t40)):
        rows = F.row_pass(logits, target, VOID, labels=True, classwise_bins=bins)
        keep = rows.keep
        want = logits.argmax(1).reshape(-1)
        assert torch.equal(rows.labels[keep], want[keep])
    assert (rows.conf[keep] < 1 / 15).all()  # the 40-class case does exercise the fallback


def test_per_row_quantities_against_numpy():
    z, t = dense_batch(c=6, seed=5)
    z[1, 3] = z[1, 1]  # ties: a target tied with the maximum counts as correct
    rows = F.row_pass(z, t, VOID, nll=True, labels=True, classwise_bins=(15,))
    p, y = ref_rows(z, t, VOID)
    keep = rows.keep.numpy()
    zz = np.moveaxis(z.double().numpy(), 1, -1).reshape(-1, 6)[keep]
    np.testing.assert_allclose(rows.conf.numpy()[keep], p.max(1), rtol=1e-14)
    np.testing.assert_allclose(rows.nll.numpy()[keep], -np.log(p[np.arange(len(y)), y]), 1e-12)
    correct = zz[np.arange(len(y)), y] == zz.max(1)
    np.testing.assert_array_equal(rows.correct.numpy()[keep], correct)
    assert rows.satisfies(VOID, True, nll=True, labels=True, classwise_bins=(15,))
    assert not rows.satisfies(VOID, True, classwise_bins=(10,))
    assert not rows.satisfies(None, True)  # built for another ignore_index
    assert not F.row_pass(z, t, VOID).satisfies(VOID, True, nll=True)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_chunks_split_in_thread_blocks_give_the_same_rows(monkeypatch, threads, from_logits):
    # chunks of at most 60 scores. 5 classes x 63 pixels: each image in pieces of 12 pixels
    # and a last one of 3, each cut into one block per thread (12 for 2 and 3 threads, 3 for
    # 3). 4 classes x 6 pixels: two images per chunk, cut for 3 threads (2 images are not a
    # multiple of 3), and a last one-image chunk, cut for 2 and 3.
    z, t = dense_batch(n=3, c=5, seed=7)
    z[0, 1, 3, :] = z[0, 3, 3, :] = 20.0  # ties inside the blocks: labels ranked again
    z[2, :, 0, 0] = 0.0  # a row of five tied classes
    if not from_logits:
        z = z.double().softmax(1)
    small = (z[:, :4, 3:4, :6].contiguous(), t[:, 3:4, :6].clamp(max=3))  # ties included
    whole = F.row_pass(
        z, t, VOID, nll=True, labels=True, classwise_bins=(15, 4), from_logits=from_logits
    )
    whole_small = F.row_pass(*small, VOID, labels=True, classwise_bins=(4,))
    monkeypatch.setattr(F._engine, "_chunk_elements", lambda device: 60)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = F.row_pass(
            z, t, VOID, nll=True, labels=True, classwise_bins=(15, 4), from_logits=from_logits
        )
        rows_small = F.row_pass(*small, VOID, labels=True, classwise_bins=(4,))
        labels_alone = F._engine.class_argmax(z)
    finally:
        torch.set_num_threads(before)
    keep = rows.keep
    assert torch.equal(rows.labels[keep], z.argmax(1).reshape(-1)[keep])
    assert torch.equal(labels_alone, z.argmax(1))
    assert torch.equal(rows_small.labels, small[0].argmax(1).reshape(-1))
    for a, b in ((rows, whole), (rows_small, whole_small)):
        for name in ("correct", "labels", "target"):
            assert torch.equal(getattr(a, name)[a.keep], getattr(b, name)[b.keep]), name
        # the sum over the classes may round differently in the last pixels of a short block
        torch.testing.assert_close(a.conf[a.keep], b.conf[b.keep], rtol=4e-16, atol=0)
        for n_bins, (count, conf_sum, hits) in b.classwise.items():
            assert torch.equal(a.classwise[n_bins][0], count)
            assert torch.equal(a.classwise[n_bins][2], hits)
            torch.testing.assert_close(a.classwise[n_bins][1], conf_sum, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(rows.nll[keep], whole.nll[keep], rtol=1e-15, atol=1e-15)
    p, y = ref_rows(z, t, VOID, from_logits=from_logits)
    for n_bins in (15, 4):
        want = ref_classwise(p, y, n_bins)
        for got, ref in zip(rows.classwise[n_bins], want):
            np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_segmentation_set_through_the_pass_equals_its_members_alone(monkeypatch):
    batches = [dense_batch(n=2, c=5, h=11, w=6, seed=s) for s in range(3)]
    shared = segmentation_metrics(5, 15, VOID, batch_averaged=True)
    members = segmentation_metrics(5, 15, VOID, batch_averaged=True)
    alone = {k: m.clone() for k, m in members.items()}
    passes = []
    original = F.row_pass

    def counting(*args, **kwargs):
        passes.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr("lightning_calib.metrics.presets.row_pass", counting)
    for z, t in batches:
        shared.update(z, t)
    assert len(passes) == len(batches)  # one pass per batch for the whole set
    assert passes[0]["nll"] and passes[0]["labels"] and passes[0]["classwise_bins"] == (15,)
    monkeypatch.undo()
    for z, t in batches:
        for m in alone.values():
            m.update(z, t)
    out = shared.compute()
    for key, metric in alone.items():
        assert out[key].item() == metric.compute().item(), key  # bit for bit


def test_a_member_with_other_settings_passes_over_the_batch_itself():
    z, t = dense_batch(c=4, seed=6)
    rows = F.row_pass(z, t, VOID)  # no nll, no class-wise bins
    from lightning_calib.metrics import NLL, ClasswiseECE

    nll, cece = NLL(ignore_index=VOID), ClasswiseECE(num_classes=4, ignore_index=VOID)
    nll.update(z, t, rows=rows)
    cece.update(z, t, rows=rows)
    p, y = ref_rows(z, t, VOID)
    assert nll.compute().item() == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean(), 1e-12)
    ref = F.classwise_calibration_error(z, t, 4, 15, VOID)
    assert cece.compute().item() == pytest.approx(ref.item(), rel=1e-12)


def test_temperature_grid_equals_each_temperature_alone_even_with_huge_logit_gaps():
    """The grid path (all temperatures of a group in one product, exponents clamped at
    -700 to avoid subnormal arithmetic) gives the statistics of each temperature alone."""
    z, t = dense_batch(c=5, seed=7)
    z[0] *= 300.0  # gaps of thousands: exp(z / T) underflows for every T of the grid
    temps = [0.1, 0.5, 1.0, 2.5, 10.0]
    grid = F.binned_calibration_stats(z, t, 15, VOID, temperature=temps)
    for i, temp in enumerate(temps):
        alone = F.binned_calibration_stats(z, t, 15, VOID, temperature=temp)
        assert torch.equal(grid[0][i], alone[0]) and torch.equal(grid[2][i], alone[2])
        torch.testing.assert_close(grid[1][i], alone[1], rtol=1e-14, atol=1e-14)
    p, _ = ref_rows(z / 2.5, t, VOID)  # and against NumPy for one of them
    np.testing.assert_array_equal(
        grid[0][3].numpy(), np.bincount(ref_bin(p.max(1), 15), minlength=15)
    )
