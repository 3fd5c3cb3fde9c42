"""Argument and input validation of the metrics: ``ValueError`` naming the culprit.

:func:`_arg_validation` checks the arguments shared by every metric, :func:`_tensor_validation`
the tensors of one ``update`` (shapes and dtypes by :func:`lightning_calib.rows.check_inputs`,
finite values, and with ``from_logits=False`` rows that are distributions); the temperature
helpers check (or, without validation, just read) a temperature or a grid of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_calib.rows import check_inputs


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool; got {value!r}.")


def _check_ignore_index(ignore_index: object) -> None:
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise ValueError(f"`ignore_index` must be an int or None; got {ignore_index!r}.")


def _arg_validation(
    n_bins: int | None = None,
    ignore_index: int | None = None,
    from_logits: bool = True,
    num_classes: int | None = None,
) -> None:
    """Validate the arguments shared by every metric; raise ``ValueError`` naming the culprit."""
    if n_bins is not None:
        _check_int("n_bins", n_bins, 1)
    if num_classes is not None:
        _check_int("num_classes", num_classes, 1)
    _check_ignore_index(ignore_index)
    _check_bool("from_logits", from_logits)


def _prob_sum_tolerance(dtype: torch.dtype) -> float:
    """Largest ``|sum_k p_k - 1|`` accepted for a row of probabilities of this dtype.

    ``2 * eps``, with ``eps`` the machine epsilon of ``dtype`` but at least float16's
    (``2**-10``): ``2**-9`` (about 1.95e-3) for float16, float32 and float64, ``2**-6``
    (1.5625e-2) for bfloat16.

    Why: rounding a normalized row to a dtype moves each ``p_k`` by at most ``p_k * eps / 2``,
    so its sum by at most ``eps / 2`` whatever the number of classes; a softmax computed in
    that dtype moves it by about ``eps`` (measured: at most 0.43 eps rounded once, 0.86 eps for
    ``exp(z) / exp(z).sum()`` in bfloat16). ``2 * eps`` leaves a factor of 2 over that, and the
    float16 floor accepts half-precision probabilities cast to float32 or float64 (float32
    arithmetic, even over 1000 classes, stays below 1e-6). A softmax over the wrong dim, or
    unnormalized scores, miss 1 by far more (row sums of about ``C / N``, or anything).
    Probabilities rounded to bfloat16 and cast up may miss by up to ~7e-3: pass them as
    bfloat16 (lossless), or pass the logits.
    """
    return 2.0 * max(torch.finfo(dtype).eps, torch.finfo(torch.float16).eps)


def _tensor_validation(
    preds: Tensor,
    target: Tensor,
    ignore_index: int | None,
    from_logits: bool,
    num_classes: int | None = None,
) -> None:
    """Shapes, dtypes, class count and target range (:func:`rows.check_inputs`), then values.

    With ``from_logits=False`` every row of ``preds`` (ignored rows included, as for the
    finiteness check) must be a distribution: values in ``[0, 1]`` and
    ``|sum over dim 1 - 1| <= 2 * max(eps(preds.dtype), eps(float16))`` (1.95e-3; 1.56e-2 for
    bfloat16; see :func:`_prob_sum_tolerance`). The sum costs one float64 pass over ``preds``,
    made only here, i.e. under ``validate_args=True``.

    Raises:
        ValueError: anything :func:`lightning_calib.rows.check_inputs` rejects; non-finite
            ``preds``; probabilities (``from_logits=False``) outside ``[0, 1]``, or whose rows
            do not sum to 1 within the tolerance (the message gives it and the worst row).
    """
    check_inputs(preds, target, ignore_index, num_classes=num_classes)
    if preds.shape[1] == 0:
        raise ValueError(
            f"`preds` must have at least one class in dim 1; got {tuple(preds.shape)}."
        )
    if preds.numel() == 0:
        return
    lo, hi = torch.aminmax(preds.detach())  # one pass; NaN propagates to both
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan = int(torch.isnan(preds.detach()).sum())
        n_inf = int(torch.isinf(preds.detach()).sum())
        raise ValueError(
            f"`preds` must be finite; expected 0 non-finite values, got {n_nan} NaN and "
            f"{n_inf} infinite out of {preds.numel()}."
        )
    if from_logits:
        return
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            "`preds` must be probabilities in [0, 1] when from_logits=False; got values in "
            f"[{lo:.6g}, {hi:.6g}]. Pass logits with from_logits=True."
        )
    _check_prob_sums(preds)


def _check_prob_sums(preds: Tensor) -> None:
    """Raise unless every row of ``preds`` sums to 1 over dim 1 within the tolerance."""
    sums = preds.detach().sum(1, dtype=torch.float64)  # (N, *spatial), float64 accumulation
    err = (sums - 1.0).abs_().reshape(-1)
    worst = int(err.argmax())
    tol = _prob_sum_tolerance(preds.dtype)
    if float(err[worst]) <= tol:
        return
    position = [int(i) for i in torch.unravel_index(torch.tensor(worst), sums.shape)]
    index = ", ".join([str(position[0]), ":", *(str(i) for i in position[1:])])
    raise ValueError(
        "`preds` must be probabilities summing to 1 over the class dim (dim 1) when "
        f"from_logits=False: |sum - 1| <= {tol:.4g} for {preds.dtype} (2 * max(eps of the "
        f"dtype, eps of float16)); the worst row, preds[{index}], sums to "
        f"{float(sums.reshape(-1)[worst]):.8g}. Was the softmax taken over another dim? Pass "
        "logits with from_logits=True, or normalized probabilities."
    )


def _temperature_list(temperature: float | Sequence[float] | Tensor) -> tuple[list[float], bool]:
    """Return ``(values, is_grid)``; raise ``ValueError`` unless every value is finite > 0."""
    if isinstance(temperature, Tensor):
        if temperature.ndim > 1:
            raise ValueError(
                f"`temperature` must be a scalar or 1-D; got shape {tuple(temperature.shape)}."
            )
        grid = temperature.ndim == 1
        values = [float(t) for t in temperature.reshape(-1).tolist()]
    elif isinstance(temperature, Sequence):
        grid, values = True, [float(t) for t in temperature]
    else:
        grid, values = False, [float(temperature)]
    if not values or not all(0.0 < t < float("inf") for t in values):
        raise ValueError(f"`temperature` values must be finite and > 0; got {values}.")
    return values, grid


def _temperature_raw(temperature: float | Sequence[float] | Tensor) -> tuple[list[float], bool]:
    if isinstance(temperature, Tensor):
        return [float(t) for t in temperature.reshape(-1).tolist()], temperature.ndim == 1
    if isinstance(temperature, Sequence):
        return [float(t) for t in temperature], True
    return [float(temperature)], False


def _check_temperature_use(temperature: float, from_logits: bool) -> None:
    _temperature_list(temperature)
    if not from_logits and float(temperature) != 1.0:
        raise ValueError("`temperature` scales logits; it needs from_logits=True.")
