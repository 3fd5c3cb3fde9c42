"""Classification input pipelines and recipe models on this machine's CPU.

1. Images per second of each datamodule's *train* loader (recipe augmentation, decoding
   included) over a fake dataset of a few hundred images in the official format, written to
   a temporary folder: CIFAR-10 (in-memory uint8 batches), Tiny-ImageNet (64x64 JPEGs),
   ImageNet (photo-sized ~400x350 JPEGs, RandomResizedCrop 224). One untimed batch first;
   then the rest of the epoch is timed, for each ``num_workers`` asked.
2. Training-step time (forward + backward + the recipe optimizer's step, cross-entropy) of
   each recipe network at a small batch on CPU: median of a few repeats after one warm-up.

Usage: ``python benchmarks/datamodules.py [--workers 0 2] [--batch 8] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules import (  # noqa: E402
    CIFAR10DataModule,
    ImageNetDataModule,
    TinyImageNetDataModule,
)
from models import ResNet, TorchvisionResNet  # noqa: E402
from tests.fake_datasets import (  # noqa: E402
    make_fake_cifar10,
    make_fake_imagenet,
    make_fake_tiny_imagenet,
)


def loader_rate(dm, workers: int) -> tuple[float, int]:
    dm.num_workers = workers
    dm.setup("fit")
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not timed
    n, start = 0, time.perf_counter()
    for x, _ in it:
        n += len(x)
    elapsed = time.perf_counter() - start
    return n / elapsed, len(dm.train_set)


def step_time(net: nn.Module, opt: torch.optim.Optimizer, shape, batch: int, repeats: int):
    x = torch.randn(batch, *shape)
    y = torch.randint(0, net.fc.out_features, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_fake_cifar10(root, per_batch=200, n_test=20)
        make_fake_tiny_imagenet(root, train_per_class=100, val_per_class=2, textured=True)
        make_fake_imagenet(
            root, n_classes=4, train_per_class=75, val_per_class=2, size=(400, 350),
            textured=True,
        )  # fmt: skip
        pipelines = [
            ("CIFAR-10", "crop32 pad4 + flip", CIFAR10DataModule(root, batch_size=64)),
            ("Tiny-ImageNet", "crop64 pad4 + flip", TinyImageNetDataModule(root, batch_size=64)),
            ("ImageNet", "RRC224 + flip", ImageNetDataModule(root, batch_size=32)),
        ]
        print("\nTrain loader throughput (fake data, recipe augmentation, decode included)")
        header = "| datamodule | augmentation | train images | batch |"
        header += "".join(f" img/s (workers={w}) |" for w in args.workers)
        print(header)
        print("|" + "---|" * (4 + len(args.workers)))
        for name, aug, dm in pipelines:
            rates = [loader_rate(dm, w) for w in args.workers]
            row = f"| {name} | {aug} | {rates[0][1]} | {dm.batch_size} |"
            row += "".join(f" {r:,.0f} |" for r, _ in rates)
            print(row, flush=True)

    torch.manual_seed(0)
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
    models = [
        ("CIFAR-10 ResNet-50", ResNet(10, depth=50, pool_size=1), (3, 32, 32), "SGD"),
        ("CIFAR-10 ResNet-101", ResNet(10, depth=101, pool_size=1), (3, 32, 32), "SGD"),
        ("Tiny-ImageNet ResNet-50", ResNet(200, depth=50, pool_size=2), (3, 64, 64), "SGD"),
        ("Tiny-ImageNet ResNet-101", ResNet(200, depth=101, pool_size=2), (3, 64, 64), "SGD"),
        ("ImageNet ResNet-50 (torchvision)", TorchvisionResNet(1000), (3, 224, 224), "AdamW"),
    ]
    print(f"\nTraining step on CPU (forward + backward + optimizer step, CE), batch {args.batch}, "
          f"median of {args.repeats}")  # fmt: skip
    print("| model | input | params (M) | optimizer | s / step | img/s |")
    print("|---|---|---|---|---|---|")
    for name, net, shape, opt_name in models:
        net.train()
        if opt_name == "SGD":
            opt = torch.optim.SGD(net.parameters(), **sgd)
        else:
            opt = torch.optim.AdamW(net.parameters(), lr=5e-4, weight_decay=0.05)
        t = step_time(net, opt, shape, args.batch, args.repeats)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        size = "x".join(map(str, shape[1:]))
        print(f"| {name} | {size} | {params:.1f} | {opt_name} | {t:.2f} | {args.batch / t:.1f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
