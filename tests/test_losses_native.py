"""The C kernel of ACLS/MbLS (losses/_native.py): build, cache, fallback, threads, edge cases.

Its numbers are checked against the float64 references in test_losses.py and the contract in
test_losses_contract.py (both run every margin-loss test on each implementation); this file
covers what only the kernel has.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import REPO, use_margin_kernel
from test_losses import IGNORE
from test_losses import make_input as float64_input

import losses._native as native
from losses import ACLS, MbLS


def make_input(shape, scale=8.0, seed=0, ignore_frac=0.2, dtype=torch.float64):
    """Logits ``scale * randn`` (margins at work) and targets with ``IGNORE`` entries."""
    return float64_input(shape, scale=scale, seed=seed, ignore_frac=ignore_frac, dtype=dtype)


def value_and_grad(loss, logits, target):
    leaf = logits.detach().clone().requires_grad_()
    total, parts = loss.forward_with_parts(leaf, target)
    total.backward()
    return total.detach(), parts, leaf.grad


def on_kernel(kind, monkeypatch, loss, logits, target):
    with monkeypatch.context() as patch:
        use_margin_kernel(kind, patch)
        return value_and_grad(loss, logits, target)


# --- the same numbers as the eager implementation, where the two code paths differ -------------

CASES = {
    "cls": (37, 9),
    "cls-1000": (8, 1000),
    "one-tile-ragged": (2, 5, 4, 5),  # 20 pixels: one partial tile
    "tiles-ragged": (3, 5, 9, 15),  # 135 pixels: tiles of 64, 64 and 7
    "volume": (2, 4, 3, 5, 7),
    "one-class": (6, 1, 3, 3),
}
LOSSES = {
    "acls": ACLS(alpha=0.3, pos_lambda=0.7, neg_lambda=0.4, margin=3.0, ignore_index=IGNORE),
    "acls-default": ACLS(ignore_index=IGNORE),
    "acls-margin-0": ACLS(margin=0.0, ignore_index=IGNORE),
    "acls-margin-80": ACLS(margin=80.0, ignore_index=IGNORE),
    "mbls": MbLS(margin=2.0, alpha=0.3, ignore_index=IGNORE),
    "mbls-default": MbLS(ignore_index=IGNORE),
    "mbls-margin-80": MbLS(margin=80.0, ignore_index=IGNORE),
}


@pytest.mark.parametrize("shape", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("name", LOSSES)
def test_native_equals_eager(name, shape, monkeypatch):
    loss = LOSSES[name]
    scale = 60.0 if "80" in name else 8.0
    logits, target = make_input(shape, scale=scale, seed=len(shape) + shape[1])
    ours = on_kernel("native", monkeypatch, loss, logits, target)
    eager = on_kernel("eager", monkeypatch, loss, logits, target)
    torch.testing.assert_close(ours[0], eager[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ours[1], eager[1], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ours[2], eager[2], rtol=1e-12, atol=1e-15)
    assert (ours[2].movedim(1, -1)[target == IGNORE] == 0).all()


@pytest.mark.parametrize("shape", [(37, 9), (3, 5, 9, 15)], ids=["cls", "seg"])
def test_float32_matches_float64(shape, monkeypatch):
    use_margin_kernel("native", monkeypatch)
    logits, target = make_input(shape)
    for loss in (ACLS(ignore_index=IGNORE), MbLS(ignore_index=IGNORE)):
        v64, _, g64 = value_and_grad(loss, logits, target)
        v32, _, g32 = value_and_grad(loss, logits.float(), target)
        assert v32.dtype == g32.dtype == torch.float32
        torch.testing.assert_close(v32.double(), v64, rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("shape", [(37, 9), (3, 5, 9, 15)], ids=["cls", "seg"])
def test_without_gradient_same_value(shape, monkeypatch):
    use_margin_kernel("native", monkeypatch)
    logits, target = make_input(shape, seed=3)
    for loss in (ACLS(ignore_index=IGNORE), MbLS(ignore_index=IGNORE)):
        value, parts, _ = value_and_grad(loss, logits, target)
        with torch.no_grad():
            value2, parts2 = loss.forward_with_parts(logits, target)
        # the loops without the gradient may sum in another order: equal to rounding
        torch.testing.assert_close(value2, value, rtol=1e-14, atol=0)
        torch.testing.assert_close(parts2["reg"], parts["reg"], rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(257, 9), (5, 3, 17, 23)], ids=["cls", "seg"])
def test_threads_change_nothing(shape, monkeypatch):
    """Split among 1, 2 or 3 threads: the same gradient bit for bit, the sums to rounding."""
    use_margin_kernel("native", monkeypatch)
    monkeypatch.setattr(native, "_MIN_PER_THREAD", 1)
    logits, target = make_input(shape, seed=4)
    before = torch.get_num_threads()
    results = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for loss in (ACLS(ignore_index=IGNORE), MbLS(ignore_index=IGNORE)):
                results[threads, type(loss)] = value_and_grad(loss, logits, target)
    finally:
        torch.set_num_threads(before)
    for (threads, kind), (value, _, grad) in results.items():
        value1, _, grad1 = results[1, kind]
        assert torch.equal(grad, grad1), threads
        torch.testing.assert_close(value, value1, rtol=1e-14, atol=0)


# --- inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
def test_target_dtypes(dtype, monkeypatch):
    use_margin_kernel("native", monkeypatch)
    logits, target = make_input((2, 5, 4, 6), seed=5)
    for loss in (ACLS(ignore_index=IGNORE), MbLS(ignore_index=IGNORE)):
        expected = value_and_grad(loss, logits, target)
        got = value_and_grad(loss, logits, target.to(dtype))
        assert torch.equal(got[2], expected[2]) and got[0].item() == expected[0].item()


@pytest.mark.parametrize("bad", [5, -1, 254])
@pytest.mark.parametrize("shape", [(6, 5), (2, 5, 3, 3)], ids=["cls", "seg"])
def test_bad_target_unchecked_is_still_an_error(bad, shape, monkeypatch):
    """With validate=False the kernel still checks every target before it reads a logit."""
    use_margin_kernel("native", monkeypatch)
    logits, target = make_input(shape, seed=6, ignore_frac=0.0)
    target.view(-1)[-1] = bad
    for cls in (ACLS, MbLS):
        with pytest.raises(ValueError, match=rf"value {bad}; expected class indices in \[0, 5\)"):
            cls(ignore_index=IGNORE, validate=False)(logits.requires_grad_(), target)


def test_bad_target_shape_or_device_unchecked_is_an_error_not_a_crash(monkeypatch):
    use_margin_kernel("native", monkeypatch)
    logits, target = make_input((2, 5, 3, 4), seed=6, ignore_frac=0.0)
    for cls in (ACLS, MbLS):
        loss = cls(validate=False)
        with pytest.raises(ValueError, match=r"`target` must have shape \(2, 3, 4\)"):
            loss(logits, target[:, :2])
        with pytest.raises(ValueError, match=r"got \(2, 12\)"):
            loss(logits, target.reshape(2, 12))
    monkeypatch.undo()  # the target on another device goes to PyTorch's code, which refuses
    meta = torch.empty(target.shape, dtype=torch.long, device="meta")
    for cls in (ACLS, MbLS):
        with pytest.raises((RuntimeError, NotImplementedError, ValueError)):
            cls(validate=False)(logits, meta)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("shape", [(4, 6), (2, 6, 3, 3)], ids=["cls", "seg"])
def test_nonfinite_logit_in_a_valid_row_is_not_hidden(shape, bad, monkeypatch):
    """A diverged network must show. The kernel hands such a batch to the eager code, which
    gives what PyTorch's operators give (NaN, or inf for a -inf logit), kernel on or off."""
    logits, target = make_input(shape, seed=7, ignore_frac=0.0)
    logits.view(-1)[3] = bad
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(native, "_enabled", enabled)
        for loss in (ACLS(), MbLS()):
            results.append(loss(logits, target))
    assert not any(torch.isfinite(r) for r in results)
    assert all(torch.isnan(r) for r in results) or bad == -float("inf")
    monkeypatch.setattr(native, "_enabled", True)
    served = native.margin_loss(
        native.ACLS, logits, target, -100, margin=10.0, alpha=0.1, needs_grad=True
    )
    assert served is None


@pytest.mark.parametrize("shape", [(7, 6), (2, 6, 5, 3)], ids=["cls", "seg"])
def test_nonfinite_logits_in_ignored_rows_change_nothing(shape, margin_kernel):
    """Ignored rows are dropped before every term, whatever their logits hold."""
    logits, target = make_input(shape, seed=8, ignore_frac=0.3)
    mask = (target == IGNORE).unsqueeze(1).expand_as(logits).clone()
    assert mask.any() and not mask.all()
    for loss in (ACLS(ignore_index=IGNORE), MbLS(ignore_index=IGNORE)):
        value, _, grad = value_and_grad(loss, logits, target)
        for bad in (float("nan"), float("inf"), -float("inf")):
            dirty = logits.masked_fill(mask, bad)
            value2, _, grad2 = value_and_grad(loss, dirty, target)
            assert value2.item() == pytest.approx(value.item(), rel=1e-14)
            torch.testing.assert_close(grad2, grad, rtol=1e-13, atol=0)


@pytest.mark.parametrize("kernel", ["native", "eager"])
@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3, 3), (2, 4, 0, 3)])
def test_empty_batch_is_an_attached_zero(shape, kernel, monkeypatch):
    use_margin_kernel(kernel, monkeypatch)
    logits = torch.zeros(shape, requires_grad=True)
    target = torch.zeros((shape[0], *shape[2:]), dtype=torch.long)
    for loss in (ACLS(), MbLS()):
        value = loss(logits, target)
        value.backward()
        assert value.item() == 0.0 and value.grad_fn is not None
        assert logits.grad.shape == shape


def test_loading_keeps_denormals(monkeypatch):
    """-ffast-math is for compiling only: the library must not switch on flush-to-zero."""
    use_margin_kernel("native", monkeypatch)
    ACLS()(*make_input((4, 5), ignore_frac=0.0))
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 0.5).item() > 0.0


# --- build, cache and fallback ------------------------------------------------------------------


def test_build_caches_by_source_compiler_and_cpu(tmp_path, monkeypatch):
    first = native.build(tmp_path)
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp  # reused
    monkeypatch.setattr(native, "_cpu_flags", lambda: "flags : another machine")
    other = native.build(tmp_path)
    assert other != first and other.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]  # cleaned up


def test_concurrent_builds_agree(tmp_path):
    """DDP ranks may build at once: each in a private folder, one atomic move each."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: native.build(tmp_path), range(4)))
    assert len(set(paths)) == 1 and paths[0].is_file()
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]  # no temporary left


def test_compiler_with_a_launcher(tmp_path, monkeypatch):
    """``$CC`` may carry a launcher or flags, as in ``CC="ccache gcc"``."""
    monkeypatch.setenv("CC", "env gcc")
    assert native.build(tmp_path).is_file()


def test_broken_compiler_falls_back_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_CALIB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_enabled", True)
    logits, target = make_input((9, 5))
    with pytest.warns(RuntimeWarning, match="C kernel of ACLS/MbLS is unavailable.*failed"):
        value = ACLS(ignore_index=IGNORE)(logits, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not on every call
        again = ACLS(ignore_index=IGNORE)(logits, target)
    monkeypatch.setattr(native, "_enabled", False)
    assert value.item() == again.item() == ACLS(ignore_index=IGNORE)(logits, target).item()
    assert not list(tmp_path.glob("*.so"))


def test_environment_variable_turns_the_kernel_off(tmp_path):
    code = (
        "import warnings; warnings.simplefilter('error'); import torch; "
        "import losses._native as n; from losses import ACLS; "
        "ACLS()(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])); "
        "print(n._enabled, n._tried)"
    )
    env = {**os.environ, "LIGHTNING_CALIB_NATIVE": "0", "LIGHTNING_CALIB_CACHE": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]  # never built, never tried
    assert not list(tmp_path.iterdir())


def test_kernel_under_address_sanitizer(tmp_path):
    """No out-of-bounds access on awkward shapes: the kernel built with -fsanitize=address."""
    cc = native._compiler()
    libasan = subprocess.run(
        [*cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert os.path.isabs(libasan), f"no AddressSanitizer runtime for {cc}: {libasan!r}"
    flags = [f for f in native._COMPILE if f != "-O3"] + ["-O1", "-g", "-fsanitize=address"]
    obj, lib = tmp_path / "margin.o", tmp_path / "margin-asan.so"
    native._run([*cc, *flags, "-c", str(native._SOURCE_DIR / "margin.c"), "-o", str(obj)])
    native._run([*cc, *native._LINK, "-fsanitize=address", str(obj), "-o", str(lib), *native._LIBS])
    env = {**os.environ, "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0"}
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "native_asan_script.py"), str(lib)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["240", "cases"]
