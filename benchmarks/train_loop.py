"""One epoch of the digits model: LightningModule + Trainer vs a plain PyTorch loop.

Same network (the digits config's ResNet-8, width 16), same data loader, same SGD optimizer,
same gradient clipping, same seeds; the two are run alternately several times in one process
and the medians compared. The Lightning side is the real ``CalibrationModule`` with its
per-step logging (loss, loss parts, logit statistics) and ``Trainer.fit`` wall time including
its set-up; validation and checkpointing are off on both sides.

Usage: ``python benchmarks/train_loop.py [--repeats 7] [--epochs 1] [--image-sizes 16 32]``
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
warnings.filterwarnings("ignore")
# The repository first: `benchmarks/losses.py` must not shadow the `losses` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import losses  # noqa: E402
from datamodules import DigitsDataModule  # noqa: E402
from lightning_calib.module import CalibrationModule  # noqa: E402
from models import ResNet  # noqa: E402


def make_parts(loss_name: str):
    torch.manual_seed(0)
    net = ResNet(10, depth=8, width=16)
    loss = getattr(losses, loss_name)()
    opt = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    return net, loss, opt


def steps_per_epoch(dm: DigitsDataModule) -> int:
    return len(dm.train_dataloader())


def plain_epochs(dm: DigitsDataModule, loss_name: str, epochs: int) -> float:
    net, loss, opt_fn = make_parts(loss_name)
    opt = opt_fn(net.parameters())
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        for x, y in dm.train_dataloader():
            opt.zero_grad(set_to_none=True)
            out = loss(net(x), y)
            out.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 2.0)
            opt.step()
    return time.perf_counter() - start


def lightning_epochs(dm: DigitsDataModule, loss_name: str, epochs: int) -> float:
    net, loss, opt_fn = make_parts(loss_name)
    model = CalibrationModule(network=net, num_classes=10, loss=loss, optimizer=opt_fn)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        gradient_clip_val=2.0, num_sanity_val_steps=0, log_every_n_steps=5,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--losses", nargs="+", default=["CrossEntropy", "ACLS"])
    parser.add_argument("--image-sizes", nargs="+", type=int, default=[16, 32])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch 64, "
        f"{args.epochs} epoch(s) per timing, median of {args.repeats} alternating repeats"
    )
    print()
    print("| image | loss | steps | plain PyTorch (s) | Lightning Trainer (s) | ratio "
          "| overhead / step (ms) |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for size in args.image_sizes:
        dm = DigitsDataModule(batch_size=64, image_size=size)
        dm.setup()
        steps = steps_per_epoch(dm) * args.epochs
        for name in args.losses:
            plain_epochs(dm, name, 1)  # warm-up both paths
            lightning_epochs(dm, name, 1)
            plain, light = [], []
            for _ in range(args.repeats):
                plain.append(plain_epochs(dm, name, args.epochs))
                light.append(lightning_epochs(dm, name, args.epochs))
            p, lt = statistics.median(plain), statistics.median(light)
            print(
                f"| {size}x{size} | {name} | {steps} | {p:.3f} | {lt:.3f} | {lt / p:.2f}x "
                f"| {1000 * (lt - p) / steps:.1f} |"
            )


if __name__ == "__main__":
    main()
