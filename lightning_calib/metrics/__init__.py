r"""Exact, DDP-safe calibration metrics for classification and segmentation (torchmetrics).

Classes (``update(preds, target)`` with logits by default, ``(N, C)`` or ``(N, C, *spatial)``),
one family per module:

* :class:`ECE`, :class:`MCE` (:mod:`.binned`): equal-width bins, pooled over every valid row /
  pixel.
* :class:`AdaptiveECE` (:mod:`.adaptive`): equal-mass bins, ``mode="exact"`` or
  ``"streaming"`` (bounded error).
* :class:`ClasswiseECE` (:mod:`.classwise`): class-wise (static) calibration error over
  ``num_classes`` classes.
* :class:`ImagewiseECE` (:mod:`.imagewise`): per-image pixel ECE averaged over images (CALS
  convention); :class:`BatchAveragedECE`: the batch-size dependent MbLS VOC convention
  (comparison only).
* :class:`NLL`, :class:`BrierScore`, :class:`TopKAccuracy` (:mod:`.scores`): exact sums.

Accepted inputs, for every class (``update(preds, target)``):

* ``preds``: logits (``from_logits=True``, the default) or probabilities (``from_logits=False``:
  values in ``[0, 1]``, each row summing to 1 over dim 1 within
  ``2 * max(eps(preds.dtype), eps(float16))``, i.e. 1.95e-3, or 1.56e-2 for bfloat16; checked
  on every row, ignored ones included, when ``validate_args=True``), floating point of any
  precision, shape ``(N, C)`` or ``(N, C, *spatial)``;
* ``target``: integer class indices, ``(N,)`` or ``(N, *spatial)``; rows whose target is
  ``ignore_index`` are dropped.

Every valid row (pixel) of everything passed to ``update`` counts once: the value is the
metric of the concatenated data, whatever the batch size or the number of processes
(:class:`BatchAveragedECE` excepted, by design). ``compute()`` before any ``update`` warns
(torchmetrics' own ``UserWarning``) and returns NaN, as it does when every row was ignored:
there is no calibration error of an empty set.

Correctness of a row is :math:`z_{y} = \max_k z_k`: a target tied with the top score counts
as correct. Confidences are float64; bins and counts are float64 / int64.

Methods that read the reduced states besides ``compute`` (``plot``, ``reliability``,
``error_bound``, ``compute_per_class``) gather them across processes as ``compute`` does:
under DDP, call them on every process.

The functional core (sufficient statistics, temperature grids) is
:mod:`lightning_calib.metrics.functional`, laid out in the same families.
"""

from lightning_calib.metrics import functional
from lightning_calib.metrics.adaptive import AdaptiveECE
from lightning_calib.metrics.binned import ECE, MCE
from lightning_calib.metrics.classwise import ClasswiseECE
from lightning_calib.metrics.imagewise import BatchAveragedECE, ImagewiseECE
from lightning_calib.metrics.scores import NLL, BrierScore, TopKAccuracy

__all__ = [
    "ECE",
    "MCE",
    "NLL",
    "AdaptiveECE",
    "BatchAveragedECE",
    "BrierScore",
    "ClasswiseECE",
    "ImagewiseECE",
    "TopKAccuracy",
    "functional",
]
