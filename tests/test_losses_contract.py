"""The contract every public loss keeps, parametrized over ``losses.__all__``.

A loss added to the package (and to ``__all__``) is tested here without any new code:
shapes, ``ignore_index``, the parts protocol, numerics (huge logits, half precision, autocast)
and argument validation.
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import loss_kernel_cases, public_losses, use_kernel

import losses

LOSSES = public_losses()
IDS = [cls.__name__ for cls in LOSSES]
IGNORE = 255
# ACLS and MbLS have two implementations (C kernel, eager PyTorch): each keeps the contract.
CASES = loss_kernel_cases()


def test_every_issue_loss_is_exported():
    expected = {
        "CrossEntropy",
        "LabelSmoothing",
        "FocalLoss",
        "FLSD",
        "EntropyPenalty",
        "MMCE",
        "MbLS",
        "CPC",
        "ACLS",
    }
    assert expected <= set(IDS)


def make_input(shape, scale=3.0, seed=0, ignore_frac=0.2, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(shape, generator=gen, dtype=dtype)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    target[torch.rand(target.shape, generator=gen) < ignore_frac] = IGNORE
    return logits, target


SHAPES = {"cls": (16, 5), "seg": (2, 5, 3, 4), "volume": (2, 4, 2, 3, 2)}


def float_params(cls):
    """Constructor arguments with a float default: every one must reject NaN and -1."""
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if isinstance(p.default, float)
    ]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_scalar_mean_with_parts(cls, kernel, shape, monkeypatch):
    use_kernel(kernel, monkeypatch)
    loss = cls(ignore_index=IGNORE)
    logits, target = make_input(shape)
    leaf = logits.clone().requires_grad_()
    total, parts = loss.forward_with_parts(leaf, target)
    assert total.shape == () and total.dtype == torch.float32
    assert total.requires_grad and math.isfinite(total.item())
    assert set(parts) == set(cls.part_names)
    for part in parts.values():
        assert part.shape == () and not part.requires_grad and math.isfinite(float(part))
    assert float(loss(logits, target)) == total.item()
    total.backward()
    assert torch.isfinite(leaf.grad).all()
    assert (leaf.grad.movedim(1, -1)[target == IGNORE] == 0).all()
    if "ce" in parts:
        torch.testing.assert_close(
            parts["ce"], F.cross_entropy(logits, target, ignore_index=IGNORE)
        )


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_forward_calls_compute_once(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    loss = cls()
    calls = []
    original = loss._compute

    def counting(batch):
        calls.append(1)
        return original(batch)

    monkeypatch.setattr(loss, "_compute", counting)
    logits, target = make_input((6, 4), ignore_frac=0.0)
    loss(logits, target)
    assert len(calls) == 1


PER_ROW = [c for c in LOSSES if c.__name__ != "MMCE"]


@pytest.mark.parametrize("cls", PER_ROW, ids=[c.__name__ for c in PER_ROW])
def test_mean_over_valid_rows(cls):
    """The loss of a batch is the row-count-weighted mean of the losses of its parts, for
    every loss whose terms are per-row means (all but MMCE, whose penalty is pairwise)."""
    loss = cls(ignore_index=IGNORE)
    logits, target = make_input((12, 6), scale=8.0, ignore_frac=0.3)
    whole = loss(logits, target)
    first, second = loss(logits[:5], target[:5]), loss(logits[5:], target[5:])
    n1, n2 = int((target[:5] != IGNORE).sum()), int((target[5:] != IGNORE).sum())
    torch.testing.assert_close(whole, (n1 * first + n2 * second) / (n1 + n2))


def test_mmce_ce_part_is_a_row_mean_but_its_penalty_is_pairwise():
    """MMCE's CE part splits like every other loss; its penalty couples rows across the batch."""
    loss = LOSSES[[c.__name__ for c in LOSSES].index("MMCE")](ignore_index=IGNORE)
    logits, target = make_input((12, 6), scale=8.0, ignore_frac=0.3)
    _, whole = loss.forward_with_parts(logits, target)
    _, first = loss.forward_with_parts(logits[:5], target[:5])
    _, second = loss.forward_with_parts(logits[5:], target[5:])
    n1, n2 = int((target[:5] != IGNORE).sum()), int((target[5:] != IGNORE).sum())
    torch.testing.assert_close(whole["ce"], (n1 * first["ce"] + n2 * second["ce"]) / (n1 + n2))
    split = (n1 * first["mmce"] + n2 * second["mmce"]) / (n1 + n2)
    assert abs(float(whole["mmce"]) - float(split)) > 1e-6


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_ignore_index_default_and_custom(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((10, 4), ignore_frac=0.0)
    dropped = target.clone()
    dropped[:3] = -100
    torch.testing.assert_close(cls()(logits, dropped), cls()(logits[3:], target[3:]))
    dropped[:3] = 7  # a custom ignore value that is not a class
    torch.testing.assert_close(cls(ignore_index=7)(logits, dropped), cls()(logits[3:], target[3:]))


@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3, 3)], ids=["cls", "seg"])
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_all_ignored_is_an_attached_zero(cls, kernel, shape, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, _ = make_input(shape)
    target = torch.full((shape[0], *shape[2:]), IGNORE)
    leaf = logits.clone().requires_grad_()
    total, parts = cls(ignore_index=IGNORE).forward_with_parts(leaf, target)
    assert total.item() == 0.0 and total.grad_fn is not None
    assert all(float(p) == 0.0 for p in parts.values())
    total.backward()
    assert leaf.grad is not None and (leaf.grad == 0).all()


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_huge_logits_stay_finite(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((2, 5, 3, 3), scale=1.0)
    logits = torch.sign(logits) * 1e4 + logits  # |z| ~ 1e4, rows far apart
    for dtype in (torch.float32, torch.float64):
        leaf = logits.to(dtype).clone().requires_grad_()
        total, parts = cls(ignore_index=IGNORE).forward_with_parts(leaf, target)
        total.backward()
        assert math.isfinite(total.item()) and all(math.isfinite(float(p)) for p in parts.values())
        assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_half_logits_computed_in_float32(cls, kernel, dtype, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((2, 5, 3, 3), scale=6.0)
    half = logits.to(dtype).requires_grad_()
    total = cls(ignore_index=IGNORE)(half, target)
    total.backward()
    assert total.dtype == torch.float32
    assert half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()
    expected = cls(ignore_index=IGNORE)(half.detach().float(), target)
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_bf16_autocast(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, 1)
    images = torch.randn(2, 3, 4, 4)
    _, target = make_input((2, 5, 4, 4))
    loss = cls(ignore_index=IGNORE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = 20.0 * layer(images)
        assert logits.dtype == torch.bfloat16
        total, parts = loss.forward_with_parts(logits, target)
    total.backward()
    assert total.dtype == torch.float32
    assert math.isfinite(total.item()) and all(math.isfinite(float(p)) for p in parts.values())
    assert torch.isfinite(layer.weight.grad).all()
    expected = loss(logits.detach().float(), target)
    torch.testing.assert_close(total, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_layouts_give_the_same_loss(cls, kernel, monkeypatch):
    """Channels-last or transposed logits, and seg rows vs the same rows as classification."""
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((2, 5, 3, 4), seed=1)
    loss = cls(ignore_index=IGNORE)
    leaf = logits.clone().requires_grad_()
    value = loss(leaf, target)
    value.backward()
    cl = logits.to(memory_format=torch.channels_last).requires_grad_()
    value_cl = loss(cl, target)
    value_cl.backward()
    torch.testing.assert_close(value_cl, value)
    torch.testing.assert_close(cl.grad, leaf.grad)
    rows = logits.movedim(1, -1).reshape(-1, 5)
    transposed = rows.t().contiguous().t()  # non-contiguous (N, K)
    torch.testing.assert_close(loss(transposed, target.reshape(-1)), value)


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_rejects_bad_arguments(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    for name in float_params(cls):
        for bad in (float("nan"), float("inf"), -1.0, "0.1"):
            with pytest.raises(ValueError, match=f"`{name}`"):
                cls(**{name: bad})
    with pytest.raises(ValueError, match="`ignore_index`"):
        cls(ignore_index=2.5)
    with pytest.raises(ValueError, match="`validate`"):
        cls(validate="yes")


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_rejects_bad_inputs(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    loss = cls(ignore_index=IGNORE)
    logits, target = make_input((4, 3), ignore_frac=0.0)
    with pytest.raises(ValueError, match="logits"):
        loss(logits[0], target[0])  # no class dim
    with pytest.raises(ValueError, match="target"):
        loss(logits, target[:3])  # shape mismatch
    with pytest.raises(ValueError, match="target"):
        loss(logits, target.float())
    with pytest.raises(ValueError, match="logits"):
        loss(logits.long(), target)
    for bad in (3, -1, 254):
        wrong = target.clone()
        wrong[0] = bad
        with pytest.raises(ValueError, match=f"value {bad}"):
            loss(logits, wrong)
    seg, seg_target = make_input((2, 3, 2, 2))
    with pytest.raises(ValueError, match="target"):
        loss(seg, seg_target.transpose(1, 2)[:, :1])
    cls(ignore_index=IGNORE, validate=False)(logits, target)  # valid input, checks off


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_stateless_copyable_module(cls, kernel, monkeypatch):
    use_kernel(kernel, monkeypatch)
    loss = cls()
    assert isinstance(loss, torch.nn.Module)
    assert len(loss.state_dict()) == 0 and not list(loss.parameters())
    clone = copy.deepcopy(loss)
    logits, target = make_input((6, 4), ignore_frac=0.0)
    assert float(clone(logits, target)) == float(loss(logits, target))
    for name in inspect.signature(cls.__init__).parameters:
        if name != "self":
            assert f"{name}=" in repr(loss)


@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_lightning_fallback_protocol(cls, kernel, monkeypatch):
    """What the LightningModule does: parts when available, else a plain call."""
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((6, 4), ignore_frac=0.0)
    for loss in (cls(), torch.nn.CrossEntropyLoss()):
        parts_fn = getattr(loss, "forward_with_parts", None)
        total, parts = parts_fn(logits, target) if parts_fn else (loss(logits, target), {})
        assert total.shape == () and isinstance(parts, dict)


@pytest.mark.parametrize("n_cls", [1, 2, 3])
@pytest.mark.parametrize(("cls", "kernel"), CASES)
def test_few_classes(cls, kernel, n_cls, monkeypatch):
    use_kernel(kernel, monkeypatch)
    logits, target = make_input((2, n_cls, 3, 2), scale=4.0, seed=2)
    leaf = logits.clone().requires_grad_()
    total, parts = cls(ignore_index=IGNORE).forward_with_parts(leaf, target)
    total.backward()
    assert math.isfinite(total.item()) and all(math.isfinite(p.item()) for p in parts.values())
    assert torch.isfinite(leaf.grad).all()
    if n_cls == 1:  # a single class: certain and right, nothing to penalize
        assert total.item() == pytest.approx(0.0, abs=1e-6)


# MMCE and CPC pack the valid rows (boolean indexing: the row count is data) and so wait for
# the device once per call; every other loss runs without reading device memory on the host.
PACKS_ROWS = (losses.MMCE, losses.CPC)


@pytest.mark.parametrize("cls", LOSSES, ids=IDS)
def test_no_host_read_of_device_data(cls, monkeypatch):
    """On an accelerator a loss must not make the host wait for the device (with validate=False:
    validation reads the target by design). "meta" tensors have no data, so any host read of
    a value (``.item()``, ``bool()``, data-dependent shapes) fails there."""
    autocast_enabled = torch.is_autocast_enabled
    monkeypatch.setattr(
        torch,
        "is_autocast_enabled",
        lambda *args: False if args and args[0] == "meta" else autocast_enabled(*args),
    )
    # large enough (no memory on "meta") for the eager margin code's CPU-only skip checks
    logits = torch.empty(2, 5, 128, 128, device="meta", requires_grad=True)
    target = torch.empty(2, 128, 128, dtype=torch.long, device="meta")
    loss = cls(ignore_index=IGNORE, validate=False)
    if cls in PACKS_ROWS:
        with pytest.raises(NotImplementedError, match="nonzero"):
            loss(logits, target)
        return
    total, parts = loss.forward_with_parts(logits, target)
    total.backward()
    assert total.shape == () and logits.grad.shape == logits.shape
    assert all(p.shape == () for p in parts.values())
