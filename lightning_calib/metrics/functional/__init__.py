r"""Functional core of the calibration metrics: sufficient statistics, and values from them.

Every metric of :mod:`lightning_calib.metrics` is two layers, as in torchmetrics:

* ``*_stats`` functions turn one batch ``(preds, target)`` into **sufficient statistics**
  (per-bin counts, confidence sums, correct counts, or plain sums). They are additive: the
  statistics of a concatenation are the sum of the statistics of the parts, which is what makes
  the metric classes exact over several batches and under DDP (``dist_reduce_fx="sum"``).
* ``*_from_stats`` / ``*_compute`` functions turn accumulated statistics into the number.

One-shot functions (:func:`expected_calibration_error`, ...) chain the two for a single batch.

Conventions shared by every function here (see ``docs/REFERENCE.md``, "Calibration metrics"):

* ``preds`` are logits by default (``from_logits=True``); ``from_logits=False`` takes
  probabilities in ``[0, 1]``. Shapes ``(N, C)`` with ``target`` ``(N,)``, or dense
  ``(N, C, *spatial)`` with ``target`` ``(N, *spatial)``; every valid pixel is one row.
  Validation and ``ignore_index`` masking come from :mod:`lightning_calib.rows`.
* Confidence is the top softmax probability, computed from the logits in float64 in one pass
  shared by every metric (:func:`row_pass`):
  :math:`\hat p_i = 1 / \sum_k \exp(z_{ik} - \max_k z_{ik})`. It equals the float64 softmax
  maximum to a few ulps. (The temperature grid of post-hoc scaling uses the unshifted
  :math:`\exp(\max_k z_{ik} / T) / \sum_k \exp(z_{ik} / T)` when the top logit lies in
  ``[-600, 700]``, one subtraction pass fewer per temperature; the two agree to a few ulps.)
* **Ties**: row *i* is correct when :math:`z_{i,y_i} = \max_k z_{ik}`, i.e. a target tied with
  the maximum counts as correct (``argmax`` would only credit the first tied class). Ties have
  probability zero for real-valued logits; they occur with saturated low-precision logits.
  :func:`topk_accuracy_stats` follows the same rule (a row is a top-*k* hit when fewer than
  *k* logits are strictly greater than the target's).
* **Equal-width bins**: bin :math:`b \in \{0, \dots, B-1\}` is :math:`(b/B, (b+1)/B]`, a
  confidence of exactly 0 in the first bin and of exactly 1 in the last one. The index is
  computed once, in float64, by :func:`bin_index`: ``clamp(ceil(conf * B) - 1, 0, B - 1)``.
* Accumulators are float64 (confidence sums) and int64 (counts): no saturation at 2**24 rows.

Dense inputs are reduced over the class dimension in their own ``(N, C, *spatial)`` layout,
in chunks of about ``2**20`` elements on CPU: moving the class dimension last first
(:func:`lightning_calib.rows.flatten`) would copy every logit, and on CPU large fresh float64
buffers cost more in page faults than the arithmetic. The per-pixel results are then flattened
in ``(N, *spatial)`` order, the order :func:`lightning_calib.rows.flatten` gives the rows, and
masked with :func:`lightning_calib.rows.valid_mask`.

Layout (everything is importable from this package, as before the split):

* :mod:`.binned`: :func:`bin_index`, :func:`binned_calibration_stats`, ECE, MCE, reliability
  data, temperature grids;
* :mod:`.adaptive`: equal-mass bins, exact and streaming;
* :mod:`.classwise`: class-wise ECE;
* :mod:`.imagewise`: image-wise ECE and the MbLS per-batch ECE;
* :mod:`.scores`: NLL, Brier score, top-*k* accuracy;
* :mod:`._engine` (private): the chunked per-row engine shared by the families:
  :func:`row_pass` and its :class:`RowPass`, which a metric set computes once per batch and
  hands to every member (``*_from_pass`` functions read it), and :func:`confidence_and_correct`;
* :mod:`._validation` (private): argument and input checks.
"""

from __future__ import annotations

from lightning_calib.metrics.functional._engine import _F64 as _F64
from lightning_calib.metrics.functional._engine import RowPass, confidence_and_correct, row_pass
from lightning_calib.metrics.functional._engine import _as_3d as _as_3d
from lightning_calib.metrics.functional._engine import _bincount as _bincount
from lightning_calib.metrics.functional._engine import _chunk_elements as _chunk_elements
from lightning_calib.metrics.functional._engine import _chunks as _chunks
from lightning_calib.metrics.functional._engine import _grid_confidence as _grid_confidence
from lightning_calib.metrics.functional._engine import _shifted_logits as _shifted_logits
from lightning_calib.metrics.functional._engine import _top_prepare as _top_prepare
from lightning_calib.metrics.functional._validation import _arg_validation as _arg_validation
from lightning_calib.metrics.functional._validation import _check_bool as _check_bool
from lightning_calib.metrics.functional._validation import (
    _check_ignore_index as _check_ignore_index,
)
from lightning_calib.metrics.functional._validation import _check_int as _check_int
from lightning_calib.metrics.functional._validation import _check_prob_sums as _check_prob_sums
from lightning_calib.metrics.functional._validation import (
    _check_temperature_use as _check_temperature_use,
)
from lightning_calib.metrics.functional._validation import (
    _prob_sum_tolerance as _prob_sum_tolerance,
)
from lightning_calib.metrics.functional._validation import _temperature_list as _temperature_list
from lightning_calib.metrics.functional._validation import _temperature_raw as _temperature_raw
from lightning_calib.metrics.functional._validation import (
    _tensor_validation as _tensor_validation,
)
from lightning_calib.metrics.functional.adaptive import (
    STREAMING_OCTAVES,
    adaptive_bin_edges,
    adaptive_bin_stats,
    adaptive_calibration_error,
    fine_bin_bounds,
    fine_bin_index,
    streaming_adaptive_ece,
    streaming_fine_stats,
    streaming_size,
)
from lightning_calib.metrics.functional.binned import _binned_top_label as _binned_top_label
from lightning_calib.metrics.functional.binned import (
    bin_index,
    binned_calibration_stats,
    binned_stats_from_pass,
    ece_for_temperatures,
    ece_from_stats,
    expected_calibration_error,
    maximum_calibration_error,
    mce_from_stats,
    reliability_from_stats,
)
from lightning_calib.metrics.functional.classwise import (
    classwise_calibration_error,
    classwise_calibration_stats,
    classwise_ece_from_stats,
)
from lightning_calib.metrics.functional.imagewise import (
    batch_averaged_ece_stats,
    batch_averaged_stats_from_pass,
    imagewise_calibration_error,
    imagewise_calibration_stats,
    imagewise_stats_from_pass,
)
from lightning_calib.metrics.functional.scores import _row_reduce as _row_reduce
from lightning_calib.metrics.functional.scores import (
    accuracy_stats_from_pass,
    brier_score,
    brier_score_stats,
    negative_log_likelihood,
    nll_stats,
    nll_stats_from_pass,
    topk_accuracy,
    topk_accuracy_stats,
)

__all__ = [
    "STREAMING_OCTAVES",
    "RowPass",
    "accuracy_stats_from_pass",
    "adaptive_bin_edges",
    "adaptive_bin_stats",
    "adaptive_calibration_error",
    "batch_averaged_ece_stats",
    "batch_averaged_stats_from_pass",
    "bin_index",
    "binned_calibration_stats",
    "binned_stats_from_pass",
    "brier_score",
    "brier_score_stats",
    "classwise_calibration_error",
    "classwise_calibration_stats",
    "classwise_ece_from_stats",
    "confidence_and_correct",
    "ece_for_temperatures",
    "ece_from_stats",
    "expected_calibration_error",
    "fine_bin_bounds",
    "fine_bin_index",
    "imagewise_calibration_error",
    "imagewise_calibration_stats",
    "imagewise_stats_from_pass",
    "maximum_calibration_error",
    "mce_from_stats",
    "negative_log_likelihood",
    "nll_stats",
    "nll_stats_from_pass",
    "reliability_from_stats",
    "row_pass",
    "streaming_adaptive_ece",
    "streaming_fine_stats",
    "streaming_size",
    "topk_accuracy",
    "topk_accuracy_stats",
]
