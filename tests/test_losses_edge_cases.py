"""Edge cases every public loss treats alike, parametrized over ``losses.__all__``.

An empty batch and a batch whose every row is ignored give an exact zero still attached to
the graph (zero gradient); every integer target dtype gives the int64 result; float and bool
targets are refused with the same message. A loss added to ``__all__`` is tested here without
any new code.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import loss_kernel_cases, public_losses, use_kernel

LOSSES = public_losses()
# ACLS and MbLS have two implementations (C kernel, eager PyTorch): each is tested.
CASES = loss_kernel_cases()
K = 5
SHAPES = {"cls": (12, K), "seg": (2, K, 3, 3)}
# The integer dtypes a target may have, each with an ignore value it can hold.
INT_DTYPES = {torch.uint8: 255, torch.int8: -100, torch.int16: -100, torch.int32: -100}


def make_input(shape, ignore_index, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.25] = ignore_index
    target.view(-1)[0] = ignore_index  # at least one ignored row
    target.view(-1)[1] = 1  # and at least one valid row
    return logits, target


def assert_attached_zero(loss, logits, target):
    leaf = logits.clone().requires_grad_()
    total, parts = loss.forward_with_parts(leaf, target)
    assert total.shape == ()
    assert total.item() == 0.0  # exactly, not NaN
    assert total.grad_fn is not None, "the zero must stay attached to the graph"
    assert all(float(p) == 0.0 for p in parts.values()), parts
    total.backward()
    assert leaf.grad is not None and leaf.grad.shape == leaf.shape
    assert torch.isfinite(leaf.grad).all() and (leaf.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8], ids=str)
@pytest.mark.parametrize("shape", [(0, K), (0, K, 3, 3)], ids=["cls", "seg"])
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_empty_batch_is_an_attached_zero(cls, kernel, shape, dtype, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits = torch.randn(shape)
    target = torch.zeros((0, *shape[2:]), dtype=dtype)
    assert_attached_zero(cls(), logits, target)


@pytest.mark.parametrize("ignore_index", [-100, 255])
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_all_ignored_dense_batch_is_an_attached_zero(cls, kernel, ignore_index, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits = torch.randn(2, K, 3, 3)
    target = torch.full((2, 3, 3), ignore_index)
    assert_attached_zero(cls(ignore_index=ignore_index), logits, target)


@pytest.mark.parametrize(
    "dtype", INT_DTYPES, ids=[str(d).removeprefix("torch.") for d in INT_DTYPES]
)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_every_integer_target_dtype_gives_the_int64_result(cls, kernel, shape, dtype, monkeypatch):
    use_kernel(kernel, monkeypatch)
    ignore_index = INT_DTYPES[dtype]
    logits, target = make_input(shape, ignore_index)
    loss = cls(ignore_index=ignore_index)

    def run(t):
        leaf = logits.clone().requires_grad_()
        total, parts = loss.forward_with_parts(leaf, t)
        total.backward()
        return total, parts, leaf.grad

    expected = run(target)
    got = run(target.to(dtype))
    assert torch.isfinite(expected[0])
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[2], expected[2], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bool], ids=str
)
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_float_and_bool_targets_are_refused(cls, kernel, dtype, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((6, K), -100)
    bad = target.clamp_min(0).to(dtype)
    message = f"`target` must hold integer class indices; got dtype {dtype}."
    with pytest.raises(ValueError, match=re.escape(message)):
        cls()(logits, bad)
