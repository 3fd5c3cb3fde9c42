r"""The label-smoothing view of calibration losses: implicit soft targets and logit grids.

For every loss here the gradient of one row with respect to its logits can be written as the
cross-entropy gradient against some *implicit soft target* :math:`\hat y`:

.. math::

    \frac{\partial \ell_i}{\partial z_{ik}} = p_{ik} - \hat y_{ik}
    \quad\Longleftrightarrow\quad \hat y_i = p_i - \nabla_{z_i}\ell_i .

Cross-entropy gives the one-hot label, label smoothing a constant mixture with the uniform
distribution, and the regularized losses a target that may move with the logits
(``docs/REFERENCE.md``, "ACLS details that matter", lists the closed forms). This module computes
:math:`\hat y` by autograd on the project's own loss objects (:func:`implicit_target`), the
closed forms to hold them against (:func:`closed_form_target`), grids of logits to sweep
(:func:`distance_grid`, :func:`top_grid`) and the logit distance at which gradient descent
stops separating the classes (:func:`equilibrium_distance`).

Everything works in the logits' dtype: pass float64 for comparisons at tight tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losses import (
    ACLS,
    CrossEntropy,
    EntropyPenalty,
    FocalLoss,
    LabelSmoothing,
    MbLS,
)

__all__ = [
    "closed_form_target",
    "distance_grid",
    "equilibrium_distance",
    "implicit_target",
    "per_row_gradient",
    "top_grid",
]


def _check_rows(logits: Tensor, target: Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"`logits` must be (N, C); got shape {tuple(logits.shape)}.")
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"`target` must be (N,) = {tuple(logits.shape[:1])}; got {tuple(target.shape)}."
        )
    if not logits.is_floating_point():
        raise ValueError(f"`logits` must be floating point; got {logits.dtype}.")


def _ignored(loss: nn.Module, target: Tensor) -> Tensor:
    """Boolean mask of the rows the loss drops (``target == loss.ignore_index``)."""
    ignore_index = getattr(loss, "ignore_index", None)
    if ignore_index is None:
        return torch.zeros_like(target, dtype=torch.bool)
    return target == ignore_index


def per_row_gradient(loss: nn.Module, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    r"""The softmax and the gradient of each row's own loss, :math:`\nabla_{z_i}\ell_i`.

    The losses of :mod:`losses` return the mean over the valid rows, so autograd gives
    :math:`\nabla_{z_i}\ell_i / N`; this multiplies it back by :math:`N`, the number of valid
    rows. A loss with ``reduction="sum"`` (e.g. :class:`torch.nn.CrossEntropyLoss`) is taken
    as is, and a loss returning one value per row is summed first. Each row's loss must depend
    on that row only (true of every loss here but MMCE, which couples the rows of a batch), and
    the mean must be a plain one (a class-weighted mean is not undone).

    Args:
        loss: a module called as ``loss(logits, target)``.
        logits: ``(N, C)`` logits; not modified (a detached copy is differentiated).
        target: ``(N,)`` class indices.

    Returns:
        ``(p, grad)``, both ``(N, C)`` in the logits' dtype. Rows the loss ignores
        (``target == loss.ignore_index``) are NaN in ``grad``.

    Example:
        >>> import torch
        >>> p, g = per_row_gradient(CrossEntropy(), torch.zeros(2, 4), torch.tensor([1, 3]))
        >>> g  # the same in each row whatever N is: p - onehot
        tensor([[ 0.2500, -0.7500,  0.2500,  0.2500],
                [ 0.2500,  0.2500,  0.2500, -0.7500]])
    """
    _check_rows(logits, target)
    z = logits.detach().clone().requires_grad_(True)
    value = loss(z, target)
    ignored = _ignored(loss, target)
    if value.ndim > 0:  # reduction="none": one loss per row
        value, scale = value.sum(), 1.0
    elif getattr(loss, "reduction", "mean") == "sum":
        scale = 1.0
    else:
        scale = float(max(int((~ignored).sum()), 1))
    (grad,) = torch.autograd.grad(value, z)
    grad = grad * scale
    grad = grad.masked_fill(ignored.unsqueeze(1), math.nan)
    return torch.softmax(logits.detach(), dim=1), grad


def implicit_target(loss: nn.Module, logits: Tensor, target: Tensor) -> Tensor:
    r"""The implicit soft target :math:`\hat y_i = p_i - \nabla_{z_i}\ell_i` of each row (autograd).

    Training with ``loss`` moves the logits as cross-entropy against :math:`\hat y_i` would:
    this is the label-smoothing view of the ACLS paper. :math:`\hat y` need not be a
    distribution: it sums to one exactly when the loss is invariant to adding a constant to
    all logits of a row, and it may leave :math:`[0, 1]`.

    Args:
        loss: a module called as ``loss(logits, target)``, e.g. any loss of :mod:`losses`
            (see :func:`per_row_gradient` for the reductions understood).
        logits: ``(N, C)`` logits.
        target: ``(N,)`` class indices.

    Returns:
        ``(N, C)`` soft targets in the logits' dtype; NaN rows where the target is ignored.

    Example:
        >>> import torch
        >>> z, y = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64), torch.tensor([0])
        >>> onehot = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
        >>> torch.allclose(implicit_target(CrossEntropy(), z, y), onehot, rtol=0, atol=1e-15)
        True
        >>> implicit_target(LabelSmoothing(alpha=0.3), z, y)  # 0.7 * onehot + 0.3 / 3
        tensor([[0.8000, 0.1000, 0.1000]], dtype=torch.float64)
    """
    p, grad = per_row_gradient(loss, logits, target)
    return p - grad


def closed_form_target(loss: nn.Module, logits: Tensor, target: Tensor) -> Tensor:
    r"""The implicit soft target from its closed form (docs/REFERENCE.md), for checks.

    With :math:`y` the one-hot label, :math:`p = \mathrm{softmax}(z)`, :math:`K` classes,
    :math:`z_{\max}` the top logit and :math:`[x]_+ = \max(x, 0)`; hyper-parameters are read
    from the loss object:

    - :class:`~losses.CrossEntropy`: :math:`\hat y = y`.
    - :class:`~losses.LabelSmoothing`: :math:`\hat y = (1-\alpha) y + \alpha/K`.
    - :class:`~losses.FocalLoss` (and :class:`~losses.FLSD`, its exponent chosen per row):
      :math:`\hat y = p - w(p_y)(p - y)` with
      :math:`w(p_y) = (1-p_y)^{\gamma} - \gamma p_y \log p_y\,(1-p_y)^{\gamma-1}`.
    - :class:`~losses.EntropyPenalty`: :math:`\hat y_k = y_k - \beta p_k(\log p_k + H(p))`.
    - :class:`~losses.MbLS`: :math:`\hat y_k = y_k + \frac{\alpha}{K}
      1[z_{\max} - z_k > M]` off the max, and :math:`\hat y_m = y_m - \frac{\alpha}{K}
      \#\{k: z_{\max} - z_k > M\}` at the max (shared evenly by tied maxima).
    - :class:`~losses.ACLS`: :math:`\hat y_m = y_m - 2\alpha\lambda_{pos}[z_{\max} - M]_+` at
      every maximal entry and :math:`\hat y_k = y_k + \frac{2\alpha\lambda_{neg}}{K-1}
      [z_{\max} - z_k - M]_+` elsewhere.

    Args:
        loss: one of the losses above (its exact class or a subclass).
        logits: ``(N, C)`` logits.
        target: ``(N,)`` class indices.

    Returns:
        ``(N, C)`` soft targets in the logits' dtype; NaN rows where the target is ignored.

    Raises:
        TypeError: a loss without a closed form here (MMCE, CPC, others).

    Example:
        >>> import torch
        >>> z = torch.tensor([[12.0, 0.0, 1.0]], dtype=torch.float64)
        >>> closed_form_target(ACLS(), z, torch.tensor([0]))  # 1 - 0.2 * 2; 0.01 * (2, 1)
        tensor([[0.6000, 0.0200, 0.0100]], dtype=torch.float64)
    """
    _check_rows(logits, target)
    z = logits.detach()
    ignored = _ignored(loss, target)
    num_classes = z.shape[1]
    onehot = F.one_hot(target.long().masked_fill(ignored, 0), num_classes).to(z.dtype)
    log_p = torch.log_softmax(z, dim=1)
    p = log_p.exp()
    zmax = z.amax(dim=1, keepdim=True)
    is_max = z == zmax

    if isinstance(loss, LabelSmoothing):
        soft = (1.0 - loss.alpha) * onehot + loss.alpha / num_classes
    elif isinstance(loss, CrossEntropy):
        soft = onehot
    elif isinstance(loss, FocalLoss):
        log_py = (log_p * onehot).sum(1, keepdim=True)
        py = log_py.exp()
        one_minus = torch.expm1(log_py).neg().clamp_min(torch.finfo(z.dtype).tiny)
        gamma = loss.gammas(py) if hasattr(loss, "gammas") else loss.gamma
        w = one_minus.pow(gamma) - gamma * py * log_py * one_minus.pow(gamma - 1.0)
        soft = p - w * (p - onehot)
    elif isinstance(loss, EntropyPenalty):
        entropy = -(p * log_p).sum(1, keepdim=True)
        soft = onehot - loss.beta * p * (log_p + entropy)
    elif isinstance(loss, MbLS):
        violated = (zmax - z > loss.margin).to(z.dtype)
        step = loss.alpha / num_classes
        count = violated.sum(1, keepdim=True)
        ties = is_max.sum(1, keepdim=True).to(z.dtype)
        soft = onehot + step * violated - step * count * is_max.to(z.dtype) / ties
    elif isinstance(loss, ACLS):
        pos = 2.0 * loss.alpha * loss.pos_lambda * (zmax - loss.margin).clamp_min(0.0)
        neg_scale = 2.0 * loss.alpha * loss.neg_lambda / max(num_classes - 1, 1)
        neg = neg_scale * (zmax - z - loss.margin).clamp_min(0.0)
        soft = onehot + torch.where(is_max, -pos.expand_as(z), neg)
    else:
        raise TypeError(f"no closed-form implicit target for {type(loss).__name__}.")
    return soft.masked_fill(ignored.unsqueeze(1), math.nan)


def _values(name: str, values: Sequence[float] | Tensor, dtype: torch.dtype) -> Tensor:
    out = torch.as_tensor(values, dtype=dtype).flatten()
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"`{name}` must be finite.")
    return out


def distance_grid(
    distances: Sequence[float] | Tensor,
    num_classes: int,
    *,
    top: float = 0.0,
    others: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Rows of logits sweeping the distance :math:`d = z_{\max} - z_1` below the top logit.

    Class 0 holds the top logit ``top`` in every row; class 1 sits ``d`` below it; classes
    ``2 .. C-1`` sit ``others`` below it, or move with class 1 when ``others`` is ``None``
    (then every non-top class is at distance ``d``). Class 0 is the unique max as long as the
    distances are positive.

    Args:
        distances: the values of :math:`d`, one row each.
        num_classes: ``C >= 2``.
        top: the top logit :math:`z_{\max}`.
        others: the fixed distance of classes ``2 ..`` below the top; ``None``: equal to ``d``.
        dtype: the logits' dtype.

    Returns:
        ``(len(distances), C)`` logits.

    Example:
        >>> distance_grid([1.0, 4.0], 4, top=2.0, others=3.0)
        tensor([[ 2.,  1., -1., -1.],
                [ 2., -2., -1., -1.]], dtype=torch.float64)
        >>> distance_grid([1.0], 3)
        tensor([[ 0., -1., -1.]], dtype=torch.float64)
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2; got {num_classes}.")
    d = _values("distances", distances, dtype)
    rest = d.unsqueeze(1) if others is None else torch.full((len(d), 1), float(others), dtype=dtype)
    logits = torch.empty(len(d), num_classes, dtype=dtype)
    logits[:, 0] = top
    logits[:, 1] = top - d
    logits[:, 2:] = top - rest
    return logits


def top_grid(
    tops: Sequence[float] | Tensor,
    num_classes: int,
    *,
    others: float | Sequence[float] = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Rows of logits sweeping the value of class 0's logit, the other classes held fixed.

    Class 0's logit takes each value of ``tops``; classes ``1 .. C-1`` keep the logits
    ``others`` (one value for all, or ``C - 1`` values). Class 0 is the top logit where its
    value exceeds them; the distances to it grow with it.

    Args:
        tops: the values of class 0's logit, one row each.
        num_classes: ``C >= 2``.
        others: the fixed logits of classes ``1 .. C-1``.
        dtype: the logits' dtype.

    Returns:
        ``(len(tops), C)`` logits.

    Example:
        >>> top_grid([0.5, 12.0], 3, others=[0.0, -1.0])
        tensor([[ 0.5000,  0.0000, -1.0000],
                [12.0000,  0.0000, -1.0000]], dtype=torch.float64)
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be >= 2; got {num_classes}.")
    t = _values("tops", tops, dtype)
    rest = torch.as_tensor(others, dtype=dtype).flatten()
    if rest.numel() not in (1, num_classes - 1):
        raise ValueError(
            f"`others` must be one value or {num_classes - 1}; got {rest.numel()} values."
        )
    logits = torch.empty(len(t), num_classes, dtype=dtype)
    logits[:, 0] = t
    logits[:, 1:] = rest
    return logits


def equilibrium_distance(
    loss: nn.Module,
    num_classes: int,
    *,
    top: float = 0.0,
    low: float = 0.0,
    high: float = 30.0,
    points: int = 301,
    tol: float = 1e-10,
) -> float:
    r"""The logit distance at which gradient descent stops pulling the top class away.

    On rows whose label is the top class 0 and whose other classes all sit :math:`d` below it
    (:func:`distance_grid` with ``others=None``), gradient flow moves the distance as
    :math:`\dot d = \dot z_0 - \dot z_1 = g_1 - g_0` with :math:`g = p - \hat y` the per-row
    gradient. The distance grows while :math:`g_0 - g_1 < 0`, that is while the soft target's
    gap :math:`\hat y_0 - \hat y_1` exceeds the predicted gap :math:`p_0 - p_1`. This returns
    the first :math:`d` in ``[low, high]`` where :math:`g_0 - g_1` reaches zero from below: a
    smooth zero, or a jump across zero at a kink (MbLS's hinge). It is found on a grid of
    ``points`` distances and refined by bisection to ``tol``.

    Args:
        loss: a module called as ``loss(logits, target)``.
        num_classes: ``C >= 2``.
        top: the top logit (matters only for losses that read absolute logits, ACLS).
        low: the smallest distance searched.
        high: the largest distance searched.
        points: grid size of the first search.
        tol: width of the final bracket.

    Returns:
        The distance, ``low`` when the descent already pulls the classes together there, and
        ``math.inf`` when it separates them over the whole range (cross-entropy, focal loss).

    Example:
        >>> import math
        >>> d = equilibrium_distance(LabelSmoothing(alpha=0.1), 10)
        >>> round(d, 6), round(math.log((1 + 9 * 0.9) / 0.1), 6)  # log((1 + (K-1)(1-a)) / a)
        (4.51086, 4.51086)
    """

    def gap(d: Tensor) -> Tensor:
        rows = distance_grid(d, num_classes, top=top)
        _, grad = per_row_gradient(loss, rows, torch.zeros(len(rows), dtype=torch.long))
        return grad[:, 0] - grad[:, 1]

    grid = torch.linspace(low, high, points, dtype=torch.float64)
    crossed = (gap(grid) >= 0).nonzero()
    if len(crossed) == 0:
        return math.inf
    first = int(crossed[0])
    if first == 0:
        return float(low)
    lo, hi = float(grid[first - 1]), float(grid[first])
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if float(gap(torch.tensor([mid], dtype=torch.float64))[0]) >= 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)
