"""Fused forward/backward for the margin losses (MbLS, ACLS).

Each loss is one autograd node that reads the logits in their own layout (class dim 1, so a
segmentation batch ``(B, K, H, W)`` is never permuted, nor copied into masked rows), computes
the cross-entropy and the regularizer from the same shifted logits, and builds the analytic
gradient of the total in the forward pass, only when a gradient is needed. The backward pass
returns that tensor (scaled by the incoming gradient), as cheap as cross-entropy's own.

Two implementations compute the forward pass. On CPU (float32/float64) it is one call of the
C kernel of :mod:`losses._native`. Elsewhere (accelerators, half precision never reaches here),
or when that kernel is unavailable, it is the PyTorch code of this module, described below;
the test suite runs every ACLS/MbLS test on both.

On large inputs memory traffic is what costs. With one intra-op thread the work is done
block by block of rows (``2**17`` logits: the block, its scratch and its gradient stay in a
2 MiB L2 cache across the dozen passes of the block). With several threads, or on an
accelerator, the whole batch is one block, so that each pass is a single parallel region
(as few barriers as possible: each stalls while any of its threads is descheduled).
Per block, with one scratch buffer ``a``:

- ``a = z - (zmax - m)`` with ``m = min(M, 60)``: the logits shifted so that the hinge is
  ``min(a, 0)`` and ``exp(a) <= e^60`` cannot overflow. Softmax and cross-entropy are
  shift-invariant, so ``e = exp(a)`` (written straight into the gradient's block) gives
  ``p = e / sum e`` and ``ce = log sum e - a_y``.
- ``e`` becomes the gradient in place; ``a`` becomes the hinge in place, then the tie mask
  ``z == zmax`` (the positives), and each is folded into the gradient.

Per-row terms go to two ``(N, 1, *S)`` buffers, weighted once at the end by ``weight``
(``1[valid] / N``, or the float ``1 / N`` when every row is valid); the terms and gradient
of ignored rows are set to zero first, so their logits (even inf or NaN) reach neither. The
functions are once-differentiable (no double backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from losses import _native
from losses.base import Batch

__all__ = ["ACLSFunction", "MbLSFunction"]

# Largest shift folded into the exponent: exp(60) * K stays far below float32's max.
_MAX_SHIFT = 60.0
# Logits per block on CPU with one intra-op thread: the block, its scratch and its gradient
# fit in a 2 MiB L2 cache.
_CPU_BLOCK = 1 << 17
# On CPU, from this many logits in a block on, skip the tie/violation passes when no row of
# the block needs them (reading the flag is cheap there); below it, run them unconditionally.
# On accelerators they always run: reading the flag would stall the host on the device.
_SKIP_CHECK_FROM = 1 << 16


def _blocks(n: int, n_cls: int, r: int, budget: int | None) -> Iterator[tuple[slice, slice]]:
    """Split a ``(n, n_cls, r)`` view into blocks of about ``budget`` elements."""
    if budget is None or n * n_cls * r <= budget:
        yield slice(0, n), slice(0, r)
        return
    if n_cls * r >= budget:  # one row-group at a time, cut along the spatial dim
        step = max(1, budget // n_cls)
        for i in range(n):
            for j in range(0, r, step):
                yield slice(i, i + 1), slice(j, j + step)
    else:  # whole rows, several at a time
        step = max(1, budget // (n_cls * r))
        for i in range(0, n, step):
            yield slice(i, i + step), slice(0, r)


Kernel = Callable[[Tensor, Tensor, "Tensor | float", "Tensor | None", Tensor, Tensor, Tensor], None]


def _run_blocks(
    kernel: Kernel, logits: Tensor, target: Tensor, weight: Tensor | float, needs_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Apply ``kernel`` block by block; return its two weighted per-row sums and the gradient.

    ``kernel(z, y, w, grad, scratch, ce_rows, reg_rows)`` gets one block of the logits
    ``(b, K, r)``, of the target and weights ``(b, 1, r)``, of the gradient (or ``None``), a
    scratch buffer of the block's shape, and the blocks of the two per-row outputs
    ``(b, 1, r)`` to fill. The gradient is ``None`` unless ``needs_grad``.
    """
    n, n_cls = logits.shape[:2]
    r = math.prod(logits.shape[2:])
    z = logits.reshape(n, n_cls, r)
    y = target.reshape(n, 1, r)
    w = weight.reshape(n, 1, r) if isinstance(weight, Tensor) else weight
    grad = torch.empty_like(z) if needs_grad else None
    per_row = z.new_empty(2, n, 1, r)  # the kernel's two per-row outputs, side by side
    # One thread: L2-sized blocks. Several: one block, so each pass is a single parallel
    # region (every region ends in a barrier that stalls while any of its threads is
    # descheduled, by other processes or data-loader workers: few regions keep that rare).
    budget = _CPU_BLOCK if z.device.type == "cpu" and torch.get_num_threads() == 1 else None
    if budget is None or z.numel() <= budget:  # one block: no slicing at all
        kernel(z, y, w, grad, torch.empty_like(z), per_row[0], per_row[1])
    else:
        scratch = None
        for rows, cols in _blocks(n, n_cls, r, budget):
            zb = z[rows, :, cols]
            if scratch is None:
                scratch = torch.empty_like(zb, memory_format=torch.contiguous_format)
            kernel(
                zb,
                y[rows, :, cols],
                w[rows, :, cols] if isinstance(w, Tensor) else w,
                grad[rows, :, cols] if grad is not None else None,
                scratch[: zb.shape[0], :, : zb.shape[2]],
                per_row[0, rows, :, cols],
                per_row[1, rows, :, cols],
            )
    flat = per_row.view(2, -1)
    if isinstance(weight, Tensor):
        # Ignored rows are dropped, not multiplied by 0: whatever their logits hold (inf, NaN)
        # reaches neither the sums nor the gradient.
        ignored = w == 0
        per_row.masked_fill_(ignored, 0.0)
        if grad is not None:
            grad.masked_fill_(ignored, 0.0)
        sums = torch.mv(flat, weight.reshape(-1))
    else:
        sums = flat.sum(1).mul_(weight)
    return sums[0], sums[1], grad.reshape(logits.shape) if grad is not None else None


def _shift(
    z: Tensor, y: Tensor, margin: float, e_out: Tensor | None, a: Tensor, ce_out: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shared first passes on a block: returns ``zmax``, ``zmax - min(M, 60)``, ``e``, ``s``.

    Fills ``a = z - zmax + min(M, 60)``, ``e = exp(a)`` (into ``e_out`` when given) and the
    per-row cross-entropy ``ce_out = log sum e - a_y``.
    """
    zmax = z.amax(1, keepdim=True)
    low = zmax - min(margin, _MAX_SHIFT)
    torch.sub(z, low, out=a)
    e = torch.exp(a, out=e_out) if e_out is not None else torch.exp(a)
    s = e.sum(1, keepdim=True)
    torch.sub(s.log(), a.gather(1, y), out=ce_out)
    return zmax, low, e, s


def _to_hinge(a: Tensor, margin: float) -> Tensor:
    """In place: ``a = z - zmax + min(M, 60)`` becomes ``min(z - zmax + M, 0) <= 0``."""
    rest = margin - min(margin, _MAX_SHIFT)
    if rest:
        a.add_(rest)
    return a.clamp_(max=0.0)


def _ce_gradient(e: Tensor, s: Tensor, target: Tensor, w: Tensor | float) -> Tensor:
    """``w * (e / s - onehot(target))``, computed in place in ``e``."""
    if isinstance(w, Tensor):
        return e.mul_(w / s).scatter_add_(1, target, -w.expand_as(target))
    return e.mul_(s.reciprocal_().mul_(w)).scatter_(1, target, -w, reduce="add")


def _add_scaled(grad: Tensor, x: Tensor, w: Tensor | float, coef: float) -> None:
    """``grad += coef * w * x`` with a per-row ``w`` tensor or a float ``w``."""
    if isinstance(w, Tensor):
        grad.addcmul_(x, w, value=coef)
    else:
        grad.add_(x, alpha=coef * w)


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


def _column(batch: Batch) -> Tensor | float:
    """The row weights with a size-1 class dim, ``(N, 1, *S)``, or the float ``1 / N``."""
    weight = batch.weight
    return weight.unsqueeze(1) if isinstance(weight, Tensor) else weight


def _finish(
    ctx: FunctionCtx, total: Tensor, ce: Tensor, reg: Tensor, grad: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, ce, reg)``; saves the gradient and marks the parts as constants."""
    if grad is not None:
        ctx.save_for_backward(grad)
    ctx.mark_non_differentiable(ce, reg)
    ctx.set_materialize_grads(False)
    return total, ce, reg


def _native_forward(
    ctx: FunctionCtx,
    kind: int,
    logits: Tensor,
    batch: Batch,
    margin: float,
    alpha: float,
    **params: float,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(total, ce, reg)`` from the C kernel, or ``None`` where it does not serve the logits."""
    fast = _native.margin_loss(
        kind,
        logits,
        batch.raw_target,
        batch.ignore_index,
        margin=margin,
        alpha=alpha,
        needs_grad=ctx.needs_input_grad[0],
        **params,
    )
    return None if fast is None else _finish(ctx, *fast)


def _any(flags: Tensor, block: Tensor) -> bool:
    """Whether ``flags`` has a nonzero entry (assumed true where checking would not pay).

    True without looking for small CPU blocks and on accelerators, where reading the flag is a
    host synchronisation.
    """
    if block.device.type != "cpu" or block.numel() < _SKIP_CHECK_FROM:
        return True
    return bool(flags.any())


class ACLSFunction(torch.autograd.Function):
    """Fused ACLS: ``(total, ce, reg)`` with ``total = ce + alpha * reg``.

    Per row, with ``[x]_+ = max(x, 0)``: ``ce = -log p_y``;
    ``reg = pos_lambda * T * [zmax - M]_+^2 + neg_lambda / (K - 1) * sum_k [zmax - z_k - M]_+^2``,
    ``T`` the number of entries equal to the max (every tied entry is a positive; an entry at
    the max adds nothing to the negative sum since ``M >= 0``). Gradient per row:
    ``w * (p - onehot(y) + 2 alpha pos_lambda [zmax - M]_+ 1[z = zmax]
    - 2 alpha neg_lambda / (K - 1) [zmax - z - M]_+)``, the implicit soft targets of the
    reference. ``ce`` and ``reg`` are returned for logging and are not differentiable.

    On CPU (float32/float64) the C kernel of :mod:`losses._native` computes all of it in one
    call; elsewhere, or without the kernel, the PyTorch code below.

    Args (of :meth:`apply`): ``logits (N, K, *S)``, the :class:`~losses.base.Batch` they
    come from (target, ignored rows), ``margin >= 0``, ``alpha``, ``pos_lambda``,
    ``neg_lambda``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        batch: Batch,
        margin: float,
        alpha: float,
        pos_lambda: float,
        neg_lambda: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        params = {"pos_lambda": pos_lambda, "neg_lambda": neg_lambda}
        fast = _native_forward(ctx, _native.ACLS, logits, batch, margin, alpha, **params)
        if fast is not None:
            return fast
        needs_grad = ctx.needs_input_grad[0]
        n_cls = logits.shape[1]
        neg_scale = neg_lambda / (n_cls - 1) if n_cls > 1 else 0.0

        def kernel(z, y, w, grad, a, ce_out, reg_out) -> None:
            zmax, low, e, s = _shift(z, y, margin, grad, a, ce_out)
            if grad is not None:
                _ce_gradient(e, s, y, w)
            if neg_scale != 0.0:
                hinge = _to_hinge(a, margin)  # -[zmax - z - M]_+
                if grad is not None:
                    _add_scaled(grad, hinge, w, 2.0 * alpha * neg_scale)
                torch.sum(hinge.mul_(hinge), 1, keepdim=True, out=reg_out).mul_(neg_scale)
            else:
                reg_out.zero_()
            if pos_lambda == 0.0:
                return
            over = (low if margin <= _MAX_SHIFT else zmax - margin).clamp_(min=0.0)
            if not _any(over, z):
                return
            tie = torch.eq(z, zmax, out=a)  # 1 at every entry equal to the max
            reg_out.addcmul_(tie.sum(1, keepdim=True).mul_(over), over, value=pos_lambda)
            if grad is not None:
                if isinstance(w, Tensor):
                    grad.addcmul_(tie, over.mul_(w), value=2.0 * alpha * pos_lambda)
                else:
                    grad.addcmul_(tie, over, value=2.0 * alpha * pos_lambda * w)

        target = batch.target.unsqueeze(1)
        ce, reg, grad = _run_blocks(kernel, logits, target, _column(batch), needs_grad)
        return _finish(ctx, torch.add(ce, reg, alpha=alpha), ce, reg, grad)

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

    On CPU (float32/float64) the C kernel of :mod:`losses._native` computes all of it in one
    call; elsewhere, or without the kernel, the PyTorch code below.

    Args (of :meth:`apply`): ``logits (N, K, *S)``, the :class:`~losses.base.Batch` they
    come from, ``margin >= 0``, ``alpha``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, logits: Tensor, batch: Batch, margin: float, alpha: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        fast = _native_forward(ctx, _native.MBLS, logits, batch, margin, alpha)
        if fast is not None:
            return fast
        needs_grad = ctx.needs_input_grad[0]
        coef = alpha / logits.shape[1]

        def kernel(z, y, w, grad, a, ce_out, reg_out) -> None:
            zmax, _, e, s = _shift(z, y, margin, grad, a, ce_out)
            if grad is not None:
                _ce_gradient(e, s, y, w)
            hinge = _to_hinge(a, margin)  # -[zmax - z - M]_+
            torch.sum(hinge, 1, keepdim=True, out=reg_out)  # minus the row's total hinge
            if grad is None or coef == 0.0 or not _any(reg_out, z):
                return
            violated = hinge.sign_()  # -1 where the hinge is active, 0 elsewhere
            count = violated.sum(1, keepdim=True)  # minus the number of violations
            _add_scaled(grad, violated, w, coef)
            tie = torch.eq(z, zmax, out=a)  # 1 at every entry equal to the max
            share = count.div_(tie.sum(1, keepdim=True)).mul_(w)
            grad.addcmul_(tie, share, value=-coef)

        target = batch.target.unsqueeze(1)
        ce, neg_hinge, grad = _run_blocks(kernel, logits, target, _column(batch), needs_grad)
        reg = neg_hinge.div_(-logits.shape[1])
        return _finish(ctx, torch.add(ce, reg, alpha=alpha), ce, reg, grad)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad_total: Tensor | None, *_: Tensor
    ) -> tuple[Tensor | None, ...]:
        return (_scaled(ctx.saved_tensors[0], grad_total), None, None, None, None)
