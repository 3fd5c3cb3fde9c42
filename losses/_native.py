"""The C kernel of the margin losses (``losses/csrc/margin.c``): built on first use, via ctypes.

On CPU, ACLS and MbLS are one C call each: a pass for the row maxima, a pass for the
exponentials (written straight into the gradient) and a pass that adds the regularizer and
its analytic gradient, on blocks that stay in cache, every loop vectorized (exp is an inlined
polynomial accurate to ~1 ulp). It replaces the ~30 PyTorch operators of :mod:`losses._fused`,
whose dispatch alone (2-3 µs each) costs more than :func:`torch.nn.functional.cross_entropy`
does on a classification batch. Both compute the same formulas; the results agree to
rounding (float64: ~1e-15 relative). A valid row with an inf/NaN logit is handed to the eager
code, so such input gives exactly the result it always gave (NaN).

**Build.** The first call compiles the two source files with the system C compiler (``$CC``,
else ``cc``/``gcc``; about a second) into a cache folder, ``$LIGHTNING_CALIB_CACHE``, else
``$XDG_CACHE_HOME/lightning_calib``, else ``~/.cache/lightning_calib``. The file name is a
hash of the sources, the flags, the compiler's version and the CPU's feature flags (the code
is built for the CPU it runs on, ``-march=native``), so a changed source, compiler or machine
gets its own build; concurrent processes (DDP ranks) each build into a private folder and
move the result in atomically. Nothing is ever downloaded.

**Fallback.** Without a compiler, when the build fails, or with
``LIGHTNING_CALIB_NATIVE=0``, the eager PyTorch implementation runs instead (one
``RuntimeWarning`` says why, unless the variable turned it off on purpose). The kernel serves
float32/float64 logits on the CPU only; accelerators always run the eager code.

**Threads.** Large inputs are split among ``torch.get_num_threads()`` threads, at least
``2**18`` logits each (starting a thread costs tens of µs: on a (128, 200) batch two threads
are slower than one), created for the call and joined before it returns; partial sums are
added in a fixed order, so a result does not depend on scheduling.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ACLS", "MBLS", "build", "library", "margin_loss", "serves"]

ACLS, MBLS = 0, 1
_DTYPES = {torch.float32: 0, torch.float64: 1}
_SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
_SOURCES = ("margin.c", "margin_impl.h")
_COMPILE = ("-O3", "-march=native", "-ffast-math", "-fPIC", "-std=c11", "-pthread")
# -ffast-math only when compiling: linking a shared object with it would add crtfastmath.o,
# which turns on flush-to-zero for the whole process (GCC < 13).
_LINK = ("-shared", "-pthread")
_LIBS = ("-lm",)
_ABI_VERSION = 4
_MIN_PER_THREAD = 1 << 18  # logits per thread, at least: starting a thread costs ~40 µs here

# LIGHTNING_CALIB_NATIVE=0 chooses the eager code; tests switch this flag.
_enabled = os.environ.get("LIGHTNING_CALIB_NATIVE", "1") != "0"
_lib: ctypes.CDLL | None = None
_tried = False
_lock = threading.Lock()


class _Job(ctypes.Structure):
    """Mirror of ``struct job`` in margin.c."""

    _fields_ = [
        ("kind", ctypes.c_int),
        ("dtype", ctypes.c_int),
        ("z", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("out", ctypes.c_void_p * 3),
        ("B", ctypes.c_int64),
        ("K", ctypes.c_int64),
        ("P", ctypes.c_int64),
        ("ignore", ctypes.c_int64),
        ("scale", ctypes.c_double),
        ("margin", ctypes.c_double),
        ("shift", ctypes.c_double),
        ("alpha", ctypes.c_double),
        ("pos_lambda", ctypes.c_double),
        ("neg_scale", ctypes.c_double),
    ]


def _cache_dir() -> Path:
    if os.environ.get("LIGHTNING_CALIB_CACHE"):
        return Path(os.environ["LIGHTNING_CALIB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightning_calib"


def _compiler() -> list[str]:
    """The compiler command: ``$CC`` (may carry a launcher, e.g. ``"ccache gcc"``), else cc/gcc."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler found (set $CC, or install gcc)")
    return [cc]


def _cpu_flags() -> str:
    """The CPU's feature flags (the build is ``-march=native``), or the machine name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")


def build(cache_dir: Path | None = None) -> Path:
    """Compile the kernel (if not built yet for this source, compiler and CPU); return its path.

    Raises:
        RuntimeError: no compiler, or the compiler/linker failed (its message included).
    """
    cc = _compiler()
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=False)
    key = hashlib.sha256()
    for name in _SOURCES:
        key.update((_SOURCE_DIR / name).read_bytes())
    for part in (*cc, *_COMPILE, *_LINK, *_LIBS, version.stdout, _cpu_flags()):
        key.update(part.encode())
    folder = cache_dir or _cache_dir()
    target = folder / f"margin-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        obj, lib = Path(tmp) / "margin.o", Path(tmp) / "margin.so"
        _run([*cc, *_COMPILE, "-c", str(_SOURCE_DIR / "margin.c"), "-o", str(obj)])
        _run([*cc, *_LINK, str(obj), "-o", str(lib), *_LIBS])
        os.replace(lib, target)  # atomic: a concurrent build of the same key is identical
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernel, building it on first use; ``None`` when it is unavailable."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            _lib = _load()
            _tried = True
    return _lib


def _load() -> ctypes.CDLL | None:
    """Build and load the kernel; on failure, warn once and return ``None``."""
    try:
        lib = ctypes.CDLL(str(build()))
        if lib.lc_abi_version() != _ABI_VERSION:
            raise RuntimeError(f"ABI version {lib.lc_abi_version()}, expected {_ABI_VERSION}")
        lib.lc_margin.restype = ctypes.c_int
        lib.lc_margin.argtypes = [
            ctypes.POINTER(_Job),
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int64),
        ]
    except (OSError, RuntimeError) as err:
        warnings.warn(
            f"lightning-calib: the C kernel of ACLS/MbLS is unavailable ({err}); the PyTorch "
            "implementation runs instead (same results, slower on small inputs). Set "
            "LIGHTNING_CALIB_NATIVE=0 to choose it without this warning.",
            RuntimeWarning,
            stacklevel=5,
        )
        return None
    return lib


def serves(logits: Tensor) -> bool:
    """Whether :func:`margin_loss` computes on these logits (else it returns ``None``).

    True for float32/float64 logits on the CPU once the kernel is built (and not switched off).
    The kernel then checks the target values itself, so the losses skip that Python check.
    """
    return (
        _enabled
        and logits.device.type == "cpu"
        and logits.dtype in _DTYPES
        and library() is not None
    )


def margin_loss(
    kind: int,
    logits: Tensor,
    target: Tensor,
    ignore_index: int,
    *,
    margin: float,
    alpha: float,
    pos_lambda: float = 0.0,
    neg_lambda: float = 0.0,
    needs_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None] | None:
    """``(total, ce, reg, grad)``, or ``None`` where the kernel does not serve (see :func:`serves`).

    ``ce`` and ``reg`` are the means over the valid rows, ``total = ce + alpha * reg`` (0-dim,
    the logits' dtype) and ``grad`` the gradient of ``total`` (``None`` unless
    ``needs_grad``). With no valid row all are zero. Also ``None`` when a valid row holds an
    inf or NaN logit: the eager code then propagates it exactly as it always has.

    Args:
        kind: :data:`ACLS` or :data:`MBLS`.
        logits: ``(N, K, *S)``; made contiguous if it is not.
        target: ``(N, *S)`` raw class indices, ``ignore_index`` included.
        ignore_index: the target value of the rows to drop.
        margin: ``M >= 0``.
        alpha: the regularizer's weight.
        pos_lambda: ACLS's positive weight (unused by MbLS).
        neg_lambda: ACLS's negative weight (unused by MbLS).
        needs_grad: whether to write the gradient.

    Raises:
        ValueError: a target of the wrong shape, or a target value neither in ``[0, K)`` nor
            ``ignore_index`` (checked here and by the kernel before it reads a logit, with or
            without the losses' ``validate``: the C code must never read out of bounds).
    """
    if not serves(logits) or target.device.type != "cpu":
        return None
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:  # checked even with validate=False: memory safety
        raise ValueError(
            f"`target` must have shape {expected} to match `logits` of shape "
            f"{tuple(logits.shape)} (class dim 1 removed); got {tuple(target.shape)}."
        )
    z = logits.detach().contiguous()
    y = target.detach().contiguous().long()
    n_cls = z.shape[1]
    grad = torch.empty(z.shape, dtype=z.dtype) if needs_grad else None
    results = [torch.empty((), dtype=z.dtype) for _ in range(3)]
    job = _Job(
        kind=kind,
        dtype=_DTYPES[z.dtype],
        z=z.data_ptr(),
        y=y.data_ptr(),
        g=grad.data_ptr() if grad is not None else None,
        out=(ctypes.c_void_p * 3)(*(r.data_ptr() for r in results)),
        B=z.shape[0],
        K=n_cls,
        P=math.prod(z.shape[2:]),
        ignore=ignore_index,
        margin=margin,
        shift=min(margin, 60.0),
        alpha=alpha,
        pos_lambda=pos_lambda,
        neg_scale=neg_lambda / (n_cls - 1) if n_cls > 1 else 0.0,
    )
    threads = max(1, min(torch.get_num_threads(), z.numel() // _MIN_PER_THREAD))
    bad = ctypes.c_int64()
    code = _lib.lc_margin(ctypes.byref(job), threads, ctypes.byref(bad))
    if code == 1:
        raise ValueError(
            f"`target` holds the value {bad.value}; expected class indices in [0, {n_cls}) "
            f"or ignore_index={ignore_index}."
        )
    if code == 3:  # an inf/NaN logit in a valid row: PyTorch's code gives the inf/NaN result
        return None
    if code != 0:
        raise RuntimeError(f"margin kernel: bad arguments (code {code}) for {tuple(z.shape)}")
    return (*results, grad)
