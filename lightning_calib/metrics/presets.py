"""Named metric sets of the task module: one :class:`MetricSet` per task, built from data facts.

A preset is a function ``(num_classes, n_bins, ignore_index) -> MetricSet``; the module takes
a preset name (``"classification"``, ``"segmentation"``) or any such function, so a new task
adds a preset here instead of a copy of the module.

Two things every preset gets right, whatever its metrics:

* **Compute groups are declared, never discovered.** torchmetrics' ``MetricCollection`` by
  default merges metrics whose states are equal after the *first* update and from then on
  updates only one of them. Top-1 and top-5 accuracy have the same state names, so a first
  batch that is 100% top-1 correct merged them for good and ``top5`` reported top-1 for the
  rest of the epoch (a value that depended on the batch size). Here the groups are explicit:
  only metrics whose states are the same function of the data by construction share one
  (ECE and MCE: per-bin counts, confidence sums and correct counts).
* **The batch is validated once, by the set, not by whichever metric comes first.** The
  members are built with ``validate_args=False``; :meth:`MetricSet.update` checks shapes, the
  class count, the target range (``ignore_index`` allowed) and finite scores, then updates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassJaccardIndex

from lightning_calib.metrics.functional import RowPass, _tensor_validation, row_pass
from lightning_calib.metrics.functional._engine import class_argmax

__all__ = [
    "PRESETS",
    "ArgmaxJaccardIndex",
    "ForegroundJaccardIndex",
    "MetricSet",
    "MetricSetFactory",
    "check_ignore_index",
    "class_argmax",
    "classification_metrics",
    "get_preset",
    "segmentation_mbls_metrics",
    "segmentation_metrics",
]


class MetricSet(MetricCollection):
    """A ``MetricCollection`` that validates each batch once and declares its compute groups.

    Args:
        metrics: ``{key: metric}``; the members should be built with ``validate_args=False``
            (the set validates for them).
        num_classes: the class count every batch must have in dim 1.
        ignore_index: the target value of the rows every member drops; a member built with
            another value is refused here.
        compute_groups: lists of keys whose members share states by construction (updated
            once per batch), or ``False`` for none. Never ``True``: see the module docstring.
        validate_args: check every batch before the members see it.
        kwargs: ``prefix`` / ``postfix`` of ``MetricCollection``.

    Raises:
        ValueError: ``compute_groups=True``, or a member whose ``ignore_index`` differs from
            ``ignore_index``.

    Example:
        >>> import torch
        >>> from lightning_calib.metrics import ECE, TopKAccuracy
        >>> s = MetricSet({"acc": TopKAccuracy(k=1), "top2": TopKAccuracy(k=2)}, num_classes=3)
        >>> s.update(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([0]))  # top-1 correct
        >>> s.update(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1]))  # only top-2
        >>> {k: v.item() for k, v in s.compute().items()}
        {'acc': 0.5, 'top2': 1.0}
    """

    def __init__(
        self,
        metrics: dict[str, Metric],
        num_classes: int,
        ignore_index: int | None = None,
        compute_groups: Sequence[Sequence[str]] | bool = False,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        if compute_groups is True:
            raise ValueError(
                "`compute_groups` must list the groups explicitly or be False; True lets "
                "torchmetrics merge metrics whose states happen to be equal after one batch."
            )
        groups = [list(g) for g in compute_groups] if compute_groups else False
        super().__init__(metrics, compute_groups=groups, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.validate_args = validate_args
        check_ignore_index(metrics, ignore_index)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Validate the batch once (when ``validate_args``), pass over it once, update all.

        The members that read a :class:`~lightning_calib.metrics.functional.RowPass`
        (``row_pass_needs()`` not ``None``) get one built here with the union of their needs:
        one float64 softmax pass per batch for the whole set instead of one per member.
        """
        if self.validate_args:
            _tensor_validation(
                preds, target, self.ignore_index, from_logits=True, num_classes=self.num_classes
            )
        needs = self._row_pass_needs()
        if needs is None:
            super().update(preds, target)
            return
        rows = row_pass(preds, target, self.ignore_index, from_logits=True, **needs)
        super().update(preds, target, rows=rows)

    def _row_pass_needs(self) -> dict[str, Any] | None:
        """The union of the members' needs, or ``None`` when no member reads a pass."""
        readers = [
            need
            for metric in self.values(copy_state=False)
            if getattr(metric, "from_logits", True) is True
            and (need := getattr(metric, "row_pass_needs", lambda: None)()) is not None
        ]
        if not readers:
            return None
        bins = dict.fromkeys(b for need in readers for b in need.get("classwise_bins", ()))
        return {
            "nll": any(need.get("nll", False) for need in readers),
            "labels": any(need.get("labels", False) for need in readers),
            "classwise_bins": tuple(bins),
        }


def check_ignore_index(metrics: Mapping[str, Metric], ignore_index: int | None) -> None:
    """Refuse a metric built with another ``ignore_index`` than the data's, naming both.

    Raises:
        ValueError: the first member whose ``ignore_index`` differs.
    """
    for key, metric in metrics.items():
        declared = getattr(metric, "ignore_index", ignore_index)
        if declared != ignore_index:
            raise ValueError(
                f"metric {key!r} was built with ignore_index={declared!r} but the data "
                f"declares ignore_index={ignore_index!r}."
            )


MetricSetFactory = Callable[[int, int, "int | None"], MetricCollection]


class ArgmaxJaccardIndex(MulticlassJaccardIndex):
    """torchmetrics' ``MulticlassJaccardIndex``, fed the arg-max labels of dense scores.

    torchmetrics takes the arg-max of float ``(N, C, *spatial)`` scores itself with
    ``argmax(1)``, a strided reduction over the class dim and most of the mIoU update on CPU;
    the labels come instead from the metric set's shared pass, or from :func:`class_argmax`
    (the same labels, ~4x faster). The states, the reduction and every other behaviour are
    torchmetrics'.
    """

    def row_pass_needs(self) -> dict[str, Any] | None:
        """The arg-max labels of a :class:`~lightning_calib.metrics.functional.RowPass`."""
        return {"labels": True}

    def update(self, preds: Tensor, target: Tensor, rows: RowPass | None = None) -> None:
        """Add a batch; dense float scores become labels first.

        The labels come from the metric set's ``rows`` when given (the pass takes them with
        its row maxima), else from :func:`class_argmax`.
        """
        if preds.is_floating_point() and preds.ndim > 2:
            if rows is not None and rows.labels is not None:
                preds = rows.labels.view(target.shape)
            else:
                preds = class_argmax(preds)
        super().update(preds, target)


class ForegroundJaccardIndex(ArgmaxJaccardIndex):
    """Mean IoU over the classes other than ``background`` (the MbLS VOC convention).

    torchmetrics' ``MulticlassJaccardIndex`` with ``average="macro"`` averages the IoU of
    every class that occurs (in the target or the predictions); this keeps its confusion-matrix
    state and its per-class IoU, and averages over the occurring classes except the
    background. Standard VOC mIoU (``miou``) averages all 21 classes; published MbLS numbers
    exclude the background.

    Example:
        >>> import torch
        >>> m = ForegroundJaccardIndex(3, validate_args=False)
        >>> logits = torch.eye(3)[[0, 1, 1, 2]].T.unsqueeze(0)  # predicts 0, 1, 1, 2
        >>> m.update(logits, torch.tensor([[0, 1, 2, 2]]))
        >>> round(m.compute().item(), 4)  # class 1: 1/2, class 2: 1/2 (class 0 left out)
        0.5
    """

    def __init__(self, num_classes: int, background: int = 0, **kwargs: Any) -> None:
        kwargs.pop("average", None)
        super().__init__(num_classes, average="none", **kwargs)
        self.background = background

    def compute(self) -> Tensor:
        """The mean IoU over the occurring non-background classes."""
        per_class = super().compute()
        confmat = self.confmat
        occurs = (confmat.sum(0) + confmat.sum(1)) > 0
        occurs[self.background] = False
        return per_class[occurs].mean()


def classification_metrics(
    num_classes: int, n_bins: int = 15, ignore_index: int | None = None
) -> MetricSet:
    """Accuracy, top-5, NLL, Brier, ECE, MCE, adaptive ECE (exact) and class-wise ECE.

    Keys: ``acc``, ``top5`` (only when ``num_classes > 5``), ``nll``, ``brier``, ``ece``,
    ``mce``, ``aece``, ``cece``. Every metric takes logits. ``ece`` and ``mce`` share one
    compute group (the same per-bin sums); every other metric is its own group.
    """
    from lightning_calib.metrics import (
        ECE,
        MCE,
        NLL,
        AdaptiveECE,
        BrierScore,
        ClasswiseECE,
        TopKAccuracy,
    )

    common = {"ignore_index": ignore_index, "validate_args": False}
    metrics: dict[str, Metric] = {"acc": TopKAccuracy(k=1, **common)}
    if num_classes > 5:
        metrics["top5"] = TopKAccuracy(k=5, **common)
    metrics.update(
        nll=NLL(**common),
        brier=BrierScore(num_classes=num_classes, **common),
        ece=ECE(n_bins=n_bins, **common),
        mce=MCE(n_bins=n_bins, **common),
        aece=AdaptiveECE(n_bins=n_bins, **common),
        cece=ClasswiseECE(num_classes=num_classes, n_bins=n_bins, **common),
    )
    return MetricSet(metrics, num_classes, ignore_index, compute_groups=[["ece", "mce"]])


def segmentation_metrics(
    num_classes: int,
    n_bins: int = 15,
    ignore_index: int | None = None,
    background: int | None = 0,
    batch_averaged: bool = False,
) -> MetricSet:
    """Dense prediction: mIoU, pixel accuracy and pixel-wise / image-wise calibration.

    Keys: ``miou`` (torchmetrics' ``MulticlassJaccardIndex``, macro over every class),
    ``miou_fg`` (the same without ``background``; absent when ``background`` is None),
    ``acc`` (pixel accuracy), ``nll``, ``ece``, ``mce``, ``aece`` (streaming mode: bounded
    memory at pixel scale), ``cece`` (pooled over every valid pixel of the evaluated set),
    ``image_ece`` (the ECE of each image over its valid pixels, averaged over images), and
    with ``batch_averaged`` the MbLS VOC convention ``batch_ece`` (per-batch ECE without
    void and background, pixel-count weighted: depends on the batch size, for comparison
    with published numbers only). The preset ``"segmentation_mbls"`` is this with
    ``batch_averaged=True``.
    """
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

    common = {"ignore_index": ignore_index, "validate_args": False}
    metrics: dict[str, Metric] = {
        "miou": ArgmaxJaccardIndex(num_classes, average="macro", **common),
    }
    if background is not None:
        metrics["miou_fg"] = ForegroundJaccardIndex(num_classes, background, **common)
    metrics.update(
        acc=TopKAccuracy(k=1, **common),
        nll=NLL(**common),
        ece=ECE(n_bins=n_bins, **common),
        mce=MCE(n_bins=n_bins, **common),
        aece=AdaptiveECE(n_bins=n_bins, mode="streaming", **common),
        cece=ClasswiseECE(num_classes=num_classes, n_bins=n_bins, **common),
        image_ece=ImagewiseECE(n_bins=n_bins, **common),
    )
    if batch_averaged:
        exclude = () if background is None else (background,)
        metrics["batch_ece"] = BatchAveragedECE(n_bins=n_bins, exclude_classes=exclude, **common)
    # miou and miou_fg read one confusion matrix; ece and mce the same per-bin sums
    groups = [["ece", "mce"], ["miou", "miou_fg"] if background is not None else ["miou"]]
    return MetricSet(metrics, num_classes, ignore_index, compute_groups=groups)


def segmentation_mbls_metrics(
    num_classes: int, n_bins: int = 15, ignore_index: int | None = None
) -> MetricSet:
    """:func:`segmentation_metrics` plus the MbLS batch-averaged ECE (``batch_ece``)."""
    return segmentation_metrics(num_classes, n_bins, ignore_index, batch_averaged=True)


PRESETS: dict[str, MetricSetFactory] = {
    "classification": classification_metrics,
    "segmentation": segmentation_metrics,
    "segmentation_mbls": segmentation_mbls_metrics,
}


def get_preset(name: str) -> MetricSetFactory:
    """The factory of a named preset, or of a ``"package.module.function"`` import path.

    Raises:
        ValueError: the name is neither a preset nor an importable callable.
    """
    if name in PRESETS:
        return PRESETS[name]
    if "." in name:
        import importlib

        module_name, _, attr = name.rpartition(".")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"`metrics`: cannot import {name!r}: {err}") from err
        if callable(factory):
            return factory
    raise ValueError(
        f"`metrics` must be one of {sorted(PRESETS)} or an importable factory "
        f"'package.module.function'; got {name!r}."
    )
