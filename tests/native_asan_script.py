"""Run the ACLS/MbLS C kernel, built with AddressSanitizer, over awkward shapes.

Started by tests/test_losses_native.py::test_kernel_under_address_sanitizer as
``LD_PRELOAD=libasan.so python native_asan_script.py <kernel.so>``: every out-of-bounds read or
write of the kernel (ragged tiles, one class, empty batches, threads) aborts the process with a
report. Each case is also compared with the eager implementation.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch

import losses._native as native
from losses import ACLS, MbLS

SHAPES = [
    (1, 1), (3, 1), (5, 2), (37, 9), (8, 1000), (2, 5, 4, 5), (3, 5, 9, 15), (2, 3, 1, 1),
    (1, 7, 63), (1, 7, 64), (1, 7, 65), (2, 4, 3, 5, 7), (6, 1, 3, 3), (0, 4), (2, 4, 0, 3),
]  # fmt: skip


def main(kernel: str) -> None:
    native.build = lambda *args, **kwargs: Path(kernel)
    assert native.library() is not None
    native._MIN_PER_THREAD = 1  # split even tiny inputs among threads
    torch.manual_seed(0)
    cases = 0
    for shape, dtype, threads, grad in itertools.product(
        SHAPES, (torch.float32, torch.float64), (1, 3), (True, False)
    ):
        torch.set_num_threads(threads)
        z = 8 * torch.randn(shape, dtype=dtype)
        y = torch.randint(0, shape[1], (shape[0], *shape[2:]))
        y[torch.rand(y.shape) < 0.3] = 255
        for loss in (ACLS(ignore_index=255), MbLS(ignore_index=255)):
            results = []
            for enabled in (True, False):
                native._enabled = enabled
                leaf = z.clone().requires_grad_(grad)
                value = loss(leaf, y)
                if grad:
                    value.backward()
                results.append((value.detach(), leaf.grad))
            native._enabled = True
            torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
            if grad:
                torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)
            cases += 1
    print(f"{cases} cases")


if __name__ == "__main__":
    main(sys.argv[1])
