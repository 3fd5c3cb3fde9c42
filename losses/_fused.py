"""Fused forward/backward for the margin losses (MbLS, ACLS).

Each loss is one autograd node that reads the logits in their own layout (class dim 1, so a
segmentation batch ``(B, K, H, W)`` is never permuted, nor copied into masked rows), computes
the cross-entropy and the regularizer from the same shifted logits, and builds the analytic
gradient of the total in the forward pass, only when a gradient is needed. The backward pass
returns that tensor (scaled by the incoming gradient), as cheap as cross-entropy's own.

Memory traffic is what costs on large inputs, so the forward uses two full-size buffers and
about a dozen passes over them:

- ``a = z - (zmax - m)`` with ``m = min(M, 60)``: the logits shifted so that the hinge is
  ``min(a, 0)`` (``m = M``) and ``exp(a) <= e^60`` cannot overflow. Softmax and
  cross-entropy are shift-invariant, so ``e = exp(a)`` gives ``p = e / sum e`` and
  ``ce = log sum e - a_y`` directly.
- ``e`` becomes the gradient in place; ``a`` becomes the hinge in place, then the tie mask
  ``z == zmax`` (the positives), and each is folded into the gradient.

Rows are weighted by ``weight`` (``1[valid] / N``, or the float ``1 / N`` when every row is
valid); ignored rows get weight zero, so their (finite) logits reach neither the loss nor the
gradient. The functions are once-differentiable (no double backward).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["ACLSFunction", "MbLSFunction"]

# Largest shift folded into the exponent: exp(60) * K stays far below float32's max.
_MAX_SHIFT = 60.0
# From this many logits on, skip the tie/violation passes when no row needs them (one host
# synchronisation, far cheaper than the passes it saves); below it, run them unconditionally.
_SKIP_CHECK_FROM = 1 << 16


def _prologue(
    logits: Tensor, target: Tensor, margin: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run the shared first passes.

    Returns ``zmax``, ``a = z - zmax + min(M, 60)``, ``e = exp(a)``, ``s = sum_k e`` and the
    per-row cross-entropy ``log s - a_y``; per-row values keep a size-1 class dim.
    """
    shift = min(margin, _MAX_SHIFT)
    zmax = logits.amax(1, keepdim=True)
    a = logits - (zmax - shift)
    e = a.exp()
    s = e.sum(1, keepdim=True)
    ce_rows = s.log().sub_(a.gather(1, target))
    return zmax, a, e, s, ce_rows


def _to_hinge(a: Tensor, margin: float) -> Tensor:
    """In place: ``a = z - zmax + min(M, 60)`` becomes ``min(z - zmax + M, 0) <= 0``."""
    rest = margin - min(margin, _MAX_SHIFT)
    if rest:
        a.add_(rest)
    return a.clamp_(max=0.0)


def _ce_gradient(e: Tensor, s: Tensor, target: Tensor, w: Tensor | float) -> Tensor:
    """``w * (e / s - onehot(target))``, computed in place in ``e``."""
    if isinstance(w, Tensor):
        return e.mul_(w / s).scatter_add_(1, target, -w)
    return e.mul_(s.reciprocal_().mul_(w)).scatter_(1, target, -w, reduce="add")


def _add_scaled(grad: Tensor, x: Tensor, w: Tensor | float, coef: float) -> None:
    """``grad += coef * w * x`` with a per-row ``w`` tensor or a float ``w``."""
    if isinstance(w, Tensor):
        grad.addcmul_(x, w, value=coef)
    else:
        grad.add_(x, alpha=coef * w)


def _weighted_sum(rows: Tensor, weight: Tensor | float) -> Tensor:
    """``sum_rows weight * rows`` for a per-row tensor of ``weight``'s numel."""
    if isinstance(weight, Tensor):
        return torch.dot(rows.reshape(-1), weight.reshape(-1))
    return rows.sum().mul_(weight)


def _scaled(grad: Tensor, grad_total: Tensor | None) -> Tensor | None:
    """``grad * grad_total``; on CPU, ``grad`` itself when ``grad_total`` is exactly 1.

    Returning the saved tensor is safe: autograd copies an incoming gradient before writing
    into it whenever another reference (here, a retained graph) still holds it. On
    accelerators the check would cost a host synchronisation, so the product is taken there.
    """
    if grad_total is None:  # only the non-differentiable outputs were used
        return None
    if grad.device.type == "cpu" and grad_total.numel() == 1 and grad_total.item() == 1.0:
        return grad
    return grad * grad_total


def _any(flags: Tensor, logits: Tensor) -> bool:
    """Whether ``flags`` has a true entry; assumed true on small inputs (no sync)."""
    return logits.numel() < _SKIP_CHECK_FROM or bool(flags.any())


class ACLSFunction(torch.autograd.Function):
    """Fused ACLS: ``(total, ce, reg)`` with ``total = ce + alpha * reg``.

    Per row, with ``[x]_+ = max(x, 0)``: ``ce = -log p_y``;
    ``reg = pos_lambda * T * [zmax - M]_+^2 + neg_lambda / (K - 1) * sum_k [zmax - z_k - M]_+^2``,
    ``T`` the number of entries equal to the max (every tied entry is a positive; an entry at
    the max adds nothing to the negative sum since ``M >= 0``). Gradient per row:
    ``w * (p - onehot(y) + 2 alpha pos_lambda [zmax - M]_+ 1[z = zmax]
    - 2 alpha neg_lambda / (K - 1) [zmax - z - M]_+)``, the implicit soft targets of the
    reference. ``ce`` and ``reg`` are returned for logging and are not differentiable.

    Args (of :meth:`apply`): ``logits (N, K, *S)``, safe ``target (N, 1, *S)`` (no ignore
    value), ``weight`` (tensor ``(N, 1, *S)`` or float), ``margin >= 0``, ``alpha``,
    ``pos_lambda``, ``neg_lambda``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | float,
        margin: float,
        alpha: float,
        pos_lambda: float,
        neg_lambda: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n_cls = logits.shape[1]
        zmax, a, e, s, ce_rows = _prologue(logits, target, margin)
        neg_scale = neg_lambda / (n_cls - 1) if n_cls > 1 else 0.0
        over = None
        if pos_lambda != 0.0:
            over = (zmax - margin).clamp_(min=0.0)  # [zmax - M]_+
            if not _any(over, logits):
                over = None
        needs_grad = ctx.needs_input_grad[0]
        grad = _ce_gradient(e, s, target, weight) if needs_grad else None

        reg_rows = None  # (N, *S)
        if neg_scale != 0.0:
            hinge = _to_hinge(a, margin)  # -[zmax - z - M]_+
            if needs_grad:
                _add_scaled(grad, hinge, weight, 2.0 * alpha * neg_scale)
            reg_rows = hinge.mul_(hinge).sum(1).mul_(neg_scale)  # squared in place
        if over is not None:
            tie = torch.eq(logits, zmax, out=a)  # 1 at every entry equal to the max
            pos_rows = tie.sum(1, keepdim=True).mul_(over).squeeze(1)
            over_rows = over.squeeze(1)
            if reg_rows is None:
                reg_rows = pos_rows.mul_(over_rows).mul_(pos_lambda)
            else:
                reg_rows.addcmul_(pos_rows, over_rows, value=pos_lambda)
            if needs_grad:
                if isinstance(weight, Tensor):
                    grad.addcmul_(tie, over.mul_(weight), value=2.0 * alpha * pos_lambda)
                else:
                    grad.addcmul_(tie, over, value=2.0 * alpha * pos_lambda * weight)

        ce = _weighted_sum(ce_rows, weight)
        reg = _weighted_sum(reg_rows, weight) if reg_rows is not None else ce.new_zeros(())
        total = torch.add(ce, reg, alpha=alpha)
        if needs_grad:
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(ce, reg)
        ctx.set_materialize_grads(False)
        return total, ce, reg

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_total: Tensor | None, *_: Tensor
    ) -> tuple[Tensor | None, ...]:
        return (_scaled(ctx.saved_tensors[0], grad_total), None, None, None, None, None, None)


class MbLSFunction(torch.autograd.Function):
    """Fused MbLS: ``(total, ce, reg)`` with ``total = ce + alpha * reg``.

    Per row, ``reg = (1/K) sum_k [zmax - z_k - M]_+`` with the max **not** detached. Gradient
    per row: ``w * (p - onehot(y) - (alpha/K) 1[zmax - z_k > M])``, plus
    ``w * (alpha/K) * #violations`` on the max; at a tie the max's share is split evenly among
    the tied entries (the subgradient :func:`torch.amax` uses). ``ce`` and ``reg`` are returned
    for logging and are not differentiable.

    Args (of :meth:`apply`): ``logits (N, K, *S)``, safe ``target (N, 1, *S)``, ``weight``
    (tensor ``(N, 1, *S)`` or float), ``margin >= 0``, ``alpha``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | float,
        margin: float,
        alpha: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n_cls = logits.shape[1]
        zmax, a, e, s, ce_rows = _prologue(logits, target, margin)
        needs_grad = ctx.needs_input_grad[0]
        grad = _ce_gradient(e, s, target, weight) if needs_grad else None
        hinge = _to_hinge(a, margin)  # -[zmax - z - M]_+
        hinge_rows = hinge.sum(1, keepdim=True)  # minus the row's total hinge
        ce = _weighted_sum(ce_rows, weight)
        reg = _weighted_sum(hinge_rows, weight).div_(-n_cls)
        total = torch.add(ce, reg, alpha=alpha)

        if needs_grad:
            if alpha != 0.0 and _any(hinge_rows, logits):
                coef = alpha / n_cls
                violated = hinge.sign_()  # -1 where the hinge is active, 0 elsewhere
                count = violated.sum(1, keepdim=True)  # minus the number of violations
                _add_scaled(grad, violated, weight, coef)
                tie = torch.eq(logits, zmax, out=a)  # 1 at every entry equal to the max
                share = count.div_(tie.sum(1, keepdim=True)).mul_(weight)
                grad.addcmul_(tie, share, value=-coef)
            ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(ce, reg)
        ctx.set_materialize_grads(False)
        return total, ce, reg

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_total: Tensor | None, *_: Tensor
    ) -> tuple[Tensor | None, ...]:
        return (_scaled(ctx.saved_tensors[0], grad_total), None, None, None, None)
