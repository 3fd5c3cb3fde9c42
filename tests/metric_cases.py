"""The registry of metric test cases: one :class:`MetricCase` per metric configuration.

Read by ``tests/test_metrics.py`` (reference values over several batches),
``tests/test_metrics_api.py`` (object behaviour, validation) and ``tests/test_metrics_ddp.py``
with ``tests/ddp_metrics_script.py`` (2-process DDP against 1 process): none of them keeps a
list of metrics of its own. Adding a metric is adding its entry to :data:`CASES`;
``test_every_exported_metric_is_registered`` fails until every public ``Metric`` class of
:mod:`lightning_calib.metrics` has one.

An entry names the class and its constructor arguments (:meth:`MetricCase.make` builds it for
a number of classes and an ``ignore_index``), the independent float64 NumPy reference
(:mod:`metric_refs`, read with the metric's own attributes: ``n_bins``, ``k``, ...), the input
kinds it accepts, what one term of its average is (a row, an image, a batch), the tolerance
against the reference, the one-shot function of :mod:`lightning_calib.metrics.functional`
equal to it on one batch, and the declared class attributes the API tests check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from metric_refs import (
    ref_aece,
    ref_all_rows,
    ref_batch_averaged,
    ref_brier,
    ref_cece,
    ref_ece,
    ref_imagewise,
    ref_mce,
    ref_nll,
    ref_topk,
)
from torch import Tensor
from torchmetrics import Metric

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

#: ``(N, C)`` logits or probabilities with ``(N,)`` targets.
CLASSIFICATION = "classification"
#: ``(N, C, *spatial)`` with ``(N, *spatial)`` targets, every valid pixel a row.
DENSE = "dense"

Batches = list[tuple[Tensor, Tensor]]


def pooled(fn: Callable[..., float]) -> Callable[[Metric, Batches], float]:
    """A reference over the concatenated valid rows: ``fn(p, y, metric)``."""

    def reference(metric: Metric, batches: Batches) -> float:
        p, y = ref_all_rows(batches, metric.ignore_index, metric.from_logits)
        return fn(p, y, metric)

    return reference


def _ratio(stats: tuple[Tensor, Tensor]) -> Tensor:
    return stats[0] / stats[1]


@dataclass(frozen=True)
class MetricCase:
    """One metric configuration and everything the generic tests need to know about it."""

    #: test id; a class may have several entries (``AdaptiveECE``, ``AdaptiveECE-streaming``)
    name: str
    cls: type[Metric]
    #: ``(metric, batches) -> float``: the float64 NumPy value of what was fed to ``metric``
    reference: Callable[[Metric, Batches], float]
    #: constructor arguments besides ``ignore_index`` (and ``num_classes``, see below)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: the constructor takes ``num_classes`` (given by the test's data)
    takes_num_classes: bool = False
    #: the input kinds the metric accepts (:data:`CLASSIFICATION`, :data:`DENSE`)
    inputs: frozenset[str] = frozenset({CLASSIFICATION, DENSE})
    #: one term of the average: ``"row"`` (the value of the concatenated rows, whatever the
    #: batching), ``"image"`` (per-image, dense only) or ``"batch"`` (per ``update`` call)
    unit: str = "row"
    #: constructor overrides also checked against the reference (``{}``: ``kwargs`` as is)
    variants: tuple[Mapping[str, Any], ...] = ({},)
    #: ``pytest.approx`` keywords against the reference; ``probs_tol`` instead for float32
    #: probabilities (``from_logits=False``) when given
    tol: Mapping[str, float] = field(default_factory=lambda: {"abs": 1e-12})
    probs_tol: Mapping[str, float] | None = None
    #: the reference is the exact value and the metric's ``error_bound()`` widens ``tol``
    bounded: bool = False
    #: ``(metric, preds, target) -> Tensor``: the functional one-shot of one batch
    functional: Callable[[Metric, Tensor, Tensor], Tensor] | None = None
    #: methods returning tensors that must agree between DDP and one process
    extras: tuple[str, ...] = ()
    #: declared class attributes
    higher_is_better: bool = False
    plot_upper_bound: float | None = 1.0
    #: ``"cat"``-reduced list states (``O(N)`` memory) instead of sum states
    list_states: bool = False

    def __post_init__(self) -> None:
        assert self.inputs and self.inputs <= {CLASSIFICATION, DENSE}, self.inputs
        assert self.unit in ("row", "image", "batch"), self.unit
        assert self.variants, "at least one variant ({} for kwargs as is)"

    def make(self, num_classes: int, ignore_index: int | None = None, **overrides: Any) -> Metric:
        """A fresh metric: ``cls(ignore_index=..., [num_classes=...], **kwargs, **overrides)``."""
        kwargs = {**self.kwargs, **overrides}
        if self.takes_num_classes:
            kwargs.setdefault("num_classes", num_classes)
        return self.cls(ignore_index=ignore_index, **kwargs)

    def approx(self, metric: Metric, expected: float) -> Any:
        """``pytest.approx(expected)`` with this case's tolerance for ``metric``'s inputs."""
        tol = dict(self.tol if metric.from_logits or self.probs_tol is None else self.probs_tol)
        if self.bounded:
            tol["abs"] = tol.get("abs", 0.0) + float(metric.error_bound())
        return pytest.approx(expected, **tol)


CASES: tuple[MetricCase, ...] = (
    MetricCase(
        "ECE",
        ECE,
        reference=pooled(lambda p, y, m: ref_ece(p, y, m.n_bins)),
        variants=({}, {"n_bins": 7}),
        functional=lambda m, z, y: F.expected_calibration_error(
            z, y, m.n_bins, m.ignore_index, from_logits=m.from_logits
        ),
    ),
    MetricCase(
        "MCE",
        MCE,
        reference=pooled(lambda p, y, m: ref_mce(p, y, m.n_bins)),
        variants=({}, {"n_bins": 7}),
        functional=lambda m, z, y: F.maximum_calibration_error(
            z, y, m.n_bins, m.ignore_index, from_logits=m.from_logits
        ),
    ),
    MetricCase(
        "AdaptiveECE",
        AdaptiveECE,
        reference=pooled(lambda p, y, m: ref_aece(p, y, m.n_bins)),
        variants=({}, {"n_bins": 4}),
        functional=lambda m, z, y: F.adaptive_calibration_error(
            z, y, m.n_bins, m.ignore_index, from_logits=m.from_logits
        ),
        extras=("error_bound",),
        list_states=True,
    ),
    MetricCase(
        "AdaptiveECE-streaming",
        AdaptiveECE,
        kwargs={"mode": "streaming", "resolution": 256},
        reference=pooled(lambda p, y, m: ref_aece(p, y, m.n_bins)),
        variants=({}, {"n_bins": 4}),
        bounded=True,
        extras=("error_bound",),
    ),
    MetricCase(
        "ClasswiseECE",
        ClasswiseECE,
        takes_num_classes=True,
        reference=pooled(lambda p, y, m: ref_cece(p, y, m.n_bins)),
        variants=({}, {"n_bins": 10}),
        functional=lambda m, z, y: F.classwise_calibration_error(
            z, y, m.num_classes, m.n_bins, m.ignore_index, from_logits=m.from_logits
        ),
        extras=("compute_per_class",),
    ),
    MetricCase(
        "ImagewiseECE",
        ImagewiseECE,
        reference=lambda m, batches: ref_imagewise(
            batches, m.ignore_index, m.n_bins, from_logits=m.from_logits
        ),
        inputs=frozenset({DENSE}),
        unit="image",
        functional=lambda m, z, y: F.imagewise_calibration_error(
            z, y, m.n_bins, m.ignore_index, from_logits=m.from_logits
        ),
    ),
    MetricCase(
        "BatchAveragedECE",
        BatchAveragedECE,
        reference=lambda m, batches: ref_batch_averaged(
            batches, m.ignore_index, m.exclude_classes, m.n_bins, from_logits=m.from_logits
        ),
        unit="batch",
        variants=({}, {"exclude_classes": ()}),
        functional=lambda m, z, y: _ratio(
            F.batch_averaged_ece_stats(
                z, y, m.n_bins, m.ignore_index, m.exclude_classes, from_logits=m.from_logits
            )
        ),
    ),
    MetricCase(
        "NLL",
        NLL,
        reference=pooled(lambda p, y, m: ref_nll(p, y)),
        tol={"rel": 1e-12},
        probs_tol={"rel": 1e-6},  # probabilities were rounded to float32
        functional=lambda m, z, y: F.negative_log_likelihood(
            z, y, m.ignore_index, from_logits=m.from_logits
        ),
        plot_upper_bound=None,
    ),
    MetricCase(
        "BrierScore",
        BrierScore,
        takes_num_classes=True,
        reference=pooled(lambda p, y, m: ref_brier(p, y)),
        tol={"rel": 1e-12},
        probs_tol={"rel": 1e-6},
        functional=lambda m, z, y: F.brier_score(
            z, y, m.ignore_index, num_classes=m.num_classes, from_logits=m.from_logits
        ),
        plot_upper_bound=2.0,
    ),
    MetricCase(
        "TopKAccuracy",
        TopKAccuracy,
        kwargs={"k": 2},
        reference=pooled(lambda p, y, m: ref_topk(p, y, m.k)),
        variants=({}, {"k": 1}, {"k": 3}),
        tol={"abs": 0.0, "rel": 0.0},  # counts: exact
        functional=lambda m, z, y: F.topk_accuracy(
            z, y, m.k, m.ignore_index, from_logits=m.from_logits
        ),
        higher_is_better=True,
    ),
)

NAMES: list[str] = [case.name for case in CASES]
BY_NAME: dict[str, MetricCase] = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "registry names must be unique"
