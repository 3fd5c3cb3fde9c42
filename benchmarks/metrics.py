"""Pixel-wise ECE at PASCAL VOC val scale: our ECE vs torchmetrics vs softmax + max.

One run, the same synthetic logits for every contender (regenerated on the fly from a fixed
seed, in preallocated buffers, so data generation adds no memory of its own). Each contender
runs in a fresh subprocess, so its peak RSS is its own:

* ``ours``: ``lightning_calib.metrics.ECE(n_bins=15, ignore_index=255)`` (update + compute);
* ``torchmetrics``: ``MulticlassCalibrationError(num_classes=21, n_bins=15, norm="l1",
  ignore_index=255)``;
* ``softmax+max``: ``logits.softmax(1).max(1)`` alone, the floor any ECE has to beat;
* ``reference``: float64 softmax and maximum (torch), correctness ``z_y == max z`` (ties
  count as correct, the documented convention), bins and sums in NumPy: the value to match.

Default scale 1.0: 1,036 batches of 4 x 21 x 256 x 256 logits = 271.6M pixels, the pixel count
of VOC 2012 val (1,449 images of about 500 x 375). ``--scale 0.02`` shrinks the number of
batches. Afterwards, the update time of ``ours`` relative to softmax + max on one batch,
interleaved, best of many repetitions.

    python benchmarks/metrics.py [--scale 0.02] [--threads 1] [--contenders ours,reference]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VOC_VAL_PIXELS = 1449 * 500 * 375
BATCH, CLASSES, SIZE, N_BINS, VOID = 4, 21, 256, 15, 255
CONTENDERS = ("ours", "torchmetrics", "softmax+max", "reference")


def n_batches(scale: float) -> int:
    return max(1, round(VOC_VAL_PIXELS * scale / (BATCH * SIZE * SIZE)))


class Batches:
    """Deterministic synthetic VOC-like logits, refilled in place (no allocation per batch).

    The target is uniform over 21 classes with 5% void; the logits are N(0, 1.5^2) plus a
    margin of 2 to 8 on the predicted class, which is the target for 80% of the pixels: most
    pixels confident, some over-confident, a realistic spread of confidences up to ~1.
    """

    def __init__(self, seed: int = 0) -> None:
        import torch

        self.torch = torch
        self.seed = seed
        shape = (BATCH, SIZE, SIZE)
        self.logits = torch.empty(BATCH, CLASSES, SIZE, SIZE)
        self.target = torch.empty(shape, dtype=torch.long)
        self.pred = torch.empty(shape, dtype=torch.long)
        self.noise = torch.empty(shape)
        self.margin = torch.empty(BATCH, 1, SIZE, SIZE)

    def fill(self, i: int) -> tuple:
        torch = self.torch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        self.target.random_(0, CLASSES, generator=g)
        self.logits.normal_(0.0, 1.5, generator=g)
        self.pred.random_(0, CLASSES, generator=g)
        self.noise.uniform_(generator=g)
        torch.where(self.noise < 0.8, self.target, self.pred, out=self.pred)
        self.margin.uniform_(2.0, 8.0, generator=g)
        self.logits.scatter_add_(1, self.pred.unsqueeze(1), self.margin)
        self.noise.uniform_(generator=g)
        self.target.masked_fill_(self.noise < 0.05, VOID)
        return self.logits, self.target


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(name: str, scale: float, threads: int | None) -> dict:
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)

    data = Batches()
    data.fill(0)
    update, finish = _contender(name, np, torch)
    base_rss = max_rss_mb()
    t_update = 0.0
    n = n_batches(scale)
    valid = 0
    for i in range(n):
        logits, target = data.fill(i)
        valid += int((target != VOID).sum())
        t0 = time.perf_counter()
        update(logits, target)
        t_update += time.perf_counter() - t0
    t0 = time.perf_counter()
    value = finish()
    t_compute = time.perf_counter() - t0
    return {
        "name": name,
        "batches": n,
        "pixels": n * BATCH * SIZE * SIZE,
        "valid": valid,
        "update_s": t_update,
        "compute_s": t_compute,
        "extra_rss_mb": max_rss_mb() - base_rss,
        "value": value,
        "threads": torch.get_num_threads(),
    }


def _contender(name: str, np, torch) -> tuple:
    if name == "ours":
        from lightning_calib.metrics import ECE

        metric = ECE(n_bins=N_BINS, ignore_index=VOID)
        return metric.update, lambda: float(metric.compute())
    if name == "torchmetrics":
        from torchmetrics.classification import MulticlassCalibrationError

        metric = MulticlassCalibrationError(
            num_classes=CLASSES, n_bins=N_BINS, norm="l1", ignore_index=VOID
        )
        return metric.update, lambda: float(metric.compute())
    if name == "softmax+max":
        return (lambda z, t: z.softmax(1).max(1)), (lambda: None)
    if name == "reference":
        count = np.zeros(N_BINS)
        conf_sum = np.zeros(N_BINS)
        hit_sum = np.zeros(N_BINS)
        ties = [0]

        def update(z, t):
            z64 = z.double()
            conf, pred = z64.softmax(1).max(1)
            keep = (t != VOID).numpy().ravel()
            z_t = z64.gather(1, t.clamp(max=CLASSES - 1).unsqueeze(1)).squeeze(1)
            # a target tied with the top logit is correct (the documented convention)
            hit = (z_t == z64.amax(1)).numpy().ravel()[keep]
            ties[0] += int((hit != (pred == t).numpy().ravel()[keep]).sum())
            conf = conf.numpy().ravel()[keep]
            b = np.clip(np.ceil(conf * N_BINS) - 1, 0, N_BINS - 1).astype(np.int64)
            count[:] += np.bincount(b, minlength=N_BINS)
            conf_sum[:] += np.bincount(b, weights=conf, minlength=N_BINS)
            hit_sum[:] += np.bincount(b, weights=hit, minlength=N_BINS)

        def finish():
            full = count > 0
            gaps = np.abs(hit_sum[full] / count[full] - conf_sum[full] / count[full])
            print(f"reference: {ties[0]} pixels whose target ties the top logit", file=sys.stderr)
            return float((count[full] / count.sum() * gaps).sum())

        return update, finish
    raise ValueError(f"unknown contender {name!r}")


def per_batch_ratio(threads: int | None, reps: int = 30) -> dict:
    """Best-of-``reps`` update time of ours vs softmax + max on one batch, interleaved."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from lightning_calib.metrics import ECE

    logits, target = Batches(seed=1).fill(0)
    checked = ECE(ignore_index=VOID)
    unchecked = ECE(ignore_index=VOID, validate_args=False)
    contenders = {
        "softmax+max": lambda: logits.softmax(1).max(1),
        "ours (validate_args=True)": lambda: checked.update(logits, target),
        "ours (validate_args=False)": lambda: unchecked.update(logits, target),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for f in contenders.values():
        f()
    for _ in range(reps):
        for k, f in contenders.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: (min(v), sorted(v)[len(v) // 2]) for k, v in times.items()} | {
        "threads": torch.get_num_threads()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VOC val pixels")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's). On a machine shared with other jobs, "
        "1 gives stable numbers: with several threads every parallel op waits at a barrier "
        "for a thread that another process has preempted, which penalizes many small ops.",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.scale, args.threads)))
        return

    load_before = os.getloadavg()[0]
    rows = []
    for name in args.contenders.split(","):
        cmd = [sys.executable, __file__, "--worker", name, "--scale", str(args.scale)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  done: {name}. {proc.stderr.strip()}", file=sys.stderr, flush=True)
    ref = next((r["value"] for r in rows if r["name"] == "reference"), None)
    first = rows[0]
    print(
        f"pixel-wise ECE, {first['batches']} batches of {BATCH}x{CLASSES}x{SIZE}x{SIZE} = "
        f"{first['pixels'] / 1e6:.1f}M pixels ({first['valid'] / 1e6:.1f}M valid), "
        f"scale {args.scale:g} of VOC val, {first['threads']} torch threads, "
        f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'contender':<14}{'update s':>10}{'compute s':>11}{'Mpix/s':>9}{'peak extra RSS':>16}"
        f"{'ECE':>20}{'|ECE - ref|':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        total = r["update_s"] + r["compute_s"]
        value = "-" if r["value"] is None else f"{r['value']:.15f}"
        err = "-" if r["value"] is None or ref is None else f"{abs(r['value'] - ref):.1e}"
        print(
            f"{r['name']:<14}{r['update_s']:>10.2f}{r['compute_s']:>11.2f}"
            f"{r['pixels'] / total / 1e6:>9.1f}{r['extra_rss_mb']:>13.0f} MB{value:>20}{err:>13}"
        )
    by = {r["name"]: r for r in rows}
    if "ours" in by and "torchmetrics" in by:
        ours = by["ours"]["update_s"] + by["ours"]["compute_s"]
        tm = by["torchmetrics"]["update_s"] + by["torchmetrics"]["compute_s"]
        print(f"end to end (update + compute): ours is {tm / ours:.1f}x faster than torchmetrics")
    if "ours" in by and "softmax+max" in by:
        ratio = by["ours"]["update_s"] / by["softmax+max"]["update_s"]
        print(f"over the run: ours' update takes {ratio:.2f}x the time of softmax+max")

    ratio = per_batch_ratio(args.threads)
    base = ratio["softmax+max"][0]
    print(
        f"one {BATCH}x{CLASSES}x{SIZE}x{SIZE} batch, {ratio['threads']} torch threads, "
        "best (median) of 30, interleaved:"
    )
    for k, v in ratio.items():
        if k != "threads":
            print(f"  {k:<28}{v[0] * 1e3:7.1f} ms ({v[1] * 1e3:5.1f})  {v[0] / base:5.2f}x")


if __name__ == "__main__":
    main()
