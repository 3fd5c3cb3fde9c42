"""Independent float64 NumPy references of the metrics, written from docs/REFERENCE.md.

Written straight from the formulas ("Calibration metrics"): softmax in NumPy float64, rows of
every valid pixel, bins by the formula, loops over bins. The only thing shared with the
implementation is the equal-width bin index formula ``clip(ceil(conf * n) - 1, 0, n - 1)`` in
float64, the convention both must follow at the edges. The registry
(:mod:`metric_cases`) ties each metric to its reference.
"""

from __future__ import annotations

import numpy as np
import torch


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


def ref_imagewise(batches, ignore_index, n_bins=15, from_logits=True):
    values = []
    for preds, target in batches:
        for i in range(preds.shape[0]):
            p, y = ref_rows(preds[i : i + 1], target[i : i + 1], ignore_index, from_logits)
            if len(y):
                values.append(ref_ece(p, y, n_bins))
    return float(np.mean(values))


def ref_batch_averaged(batches, ignore_index, exclude=(0,), n_bins=15, from_logits=True):
    num = den = 0.0
    for preds, target in batches:
        p, y = ref_rows(preds, target, ignore_index, from_logits)
        keep = ~np.isin(y, exclude)
        p, y = p[keep], y[keep]
        if len(y):
            num += len(y) * ref_ece(p, y, n_bins)
            den += len(y)
    return num / den


def ref_all_rows(batches, ignore_index=None, from_logits=True):
    parts = [ref_rows(p, t, ignore_index, from_logits) for p, t in batches]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
