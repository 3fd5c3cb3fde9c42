"""Segmentation at PASCAL VOC scale: validation metrics, a training step, the train loader.

Every table is a ratio of contenders measured side by side in one run, interleaved (rotating
order), so the drift of a shared machine hits every contender alike.

a. **Validation pass** at VOC-val scale: synthetic logits of 1,449 images of 512 x 512 (21
   classes, ~10% void pixels), batch 4, regenerated per batch from a seeded generator (the
   generation is not timed). On each batch, in rotating order: the whole segmentation metric
   set (``presets.segmentation_metrics(21, 15, 255)``, updated per batch and computed at the
   end), the temperature search (``TemperatureGrid`` as ``CalibrationModule`` builds it: taken
   from a module built with ``metrics="segmentation", ignore_index=255``), and the baseline
   ``softmax(1).max(1)``. Ratio: (metric set + search) / baseline, median over batches (and over
   the whole pass, with ``compute()``). Goals: ratio <= 2.0, search <= 0.5 x metric set. Each
   scale runs in a fresh process; the extra peak RSS of the metric set and the search (the
   peak resident memory during their calls, minus the resident memory before the pass, data
   buffers included; ``/proc/self/status`` VmHWM, reset before every call through
   ``/proc/self/clear_refs``; goal <= 200 MB) must be flat in the number of pixels, so two
   scales (``--scale`` and a quarter of it) are measured and reported. Each contender's own
   transient per call is reported too (the baseline's is its 88 MB softmax output). Before
   and after each pass, ``cache_probe`` says which of this 2-vCPU machine's two states the
   run was in (whether operations that split a chunk otherwise across the threads cost
   several times more); it decides how fast a pass of many small operations runs there.
b. **Training step** of DeepLabV3-ResNet50 at 512 x 512 (batch 2; forward + loss + backward
   + SGD step; one network and optimizer, the two losses alternating) with
   ``losses.ACLS(ignore_index=255)`` against ``losses.CrossEntropy(ignore_index=255)``:
   median over interleaved repeats of time(ACLS) / time(CE) in the same repeat, after one
   warm-up step each. Goal <= 1.05. Also the two losses alone on the same logits shape.
c. **Train loader**, per sample in one process with one thread (what one DataLoader worker
   does): reading VOC-like JPEG/PNG pairs (sizes 500x375, 375x500, 500x333, 500x500 written
   to a temporary folder) with ``datamodules.voc.SegmentationFileDataset`` and the
   albumentations VOC train pipeline (``datamodules.segmentation_transforms
   .voc_train_transform``, reseeded per sample as the dataset does), against the same reading
   and the same steps in torchvision transforms v2 applied jointly to ``tv_tensors.Image``
   and ``tv_tensors.Mask`` (colour jitter, longest side to 640, pad to 512 (image 0, mask
   255) + random crop 512, flip, float + normalize). Images/s, median over rounds.

Default run: ``--scale 0.1`` (145 images, 37 batches; and 0.025), so that the whole run
takes about 4-5 minutes on an idle 2-core CPU (part b alone: 12 steps of ~13 s); ``--scale
1.0`` is all 1,449 images (363 batches: about 7 more minutes for part a). ``--parts a`` (or
``b``, ``c``, ``ab``...) runs only some parts. On a machine shared with other jobs,
``--threads 1 --clock cpu`` times the CPU time of the calling thread (stable, but slower).

    python benchmarks/segmentation.py [--scale 0.2] [--parts abc] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

VOC_VAL_IMAGES = 1449
SIZE, CLASSES, BATCH, N_BINS, VOID = 512, 21, 4, 15, 255
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLOCK = time.perf_counter  # --clock cpu: time.thread_time (needs --threads 1)

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a dev dependency
    psutil = None


# --- memory ------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident memory of this process, MiB (psutil, else /proc/self/statm)."""
    if psutil is not None:
        return psutil.Process().memory_info().rss / 2**20
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak` (else since start), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- a. validation pass --------------------------------------------------------------------------


class Batches:
    """Synthetic VOC-val-like logits, refilled in place from a per-batch seeded generator.

    The target is uniform over 21 classes with ~10% void; the logits are N(0, 1.5^2) plus a
    margin of 2 to 8 on the predicted class, which is the target for 80% of the pixels.
    """

    def __init__(self, seed: int = 0) -> None:
        shape = (BATCH, SIZE, SIZE)
        self.seed = seed
        self.logits = torch.empty(BATCH, CLASSES, SIZE, SIZE)
        self.target = torch.empty(shape, dtype=torch.long)
        self.pred = torch.empty(shape, dtype=torch.long)
        self.noise = torch.empty(shape)
        self.margin = torch.empty(BATCH, 1, SIZE, SIZE)

    def fill(self, i: int, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        self.target.random_(0, CLASSES, generator=g)
        self.logits.normal_(0.0, 1.5, generator=g)
        self.pred.random_(0, CLASSES, generator=g)
        self.noise.uniform_(generator=g)
        torch.where(self.noise < 0.8, self.target, self.pred, out=self.pred)
        self.margin.uniform_(2.0, 8.0, generator=g)
        self.logits.scatter_add_(1, self.pred.unsqueeze(1), self.margin)
        self.noise.uniform_(generator=g)
        self.target.masked_fill_(self.noise < 0.1, VOID)
        return self.logits[:n], self.target[:n]


def build_validation() -> tuple:
    """The metric set and the temperature search, as the module builds them."""
    from torch import nn

    from lightning_calib.metrics.presets import segmentation_metrics
    from lightning_calib.module import CalibrationModule

    module = CalibrationModule(
        network=nn.Identity(), num_classes=CLASSES, metrics="segmentation", n_bins=N_BINS,
        ignore_index=VOID,
    )  # fmt: skip
    return segmentation_metrics(CLASSES, N_BINS, VOID), module.temperature_search


def cache_probe(rounds: int = 20) -> tuple[float, float]:
    """``(same, switch)`` ms: ``rounds`` x two elementwise operations on a ``(1, 21, 49932)``
    float64 chunk, against ``rounds`` x one elementwise operation and a maximum over the
    classes (best of 3). With several threads the second hands each thread the other's
    data at every switch (see ``_engine._load_chunk``); ``switch / same`` near 1 means the
    threads' cores share a cache, several times 1 that they do not (this machine's two
    states, which decide how fast a pass of many small operations runs)."""
    d = torch.randn(1, CLASSES, 49932, dtype=torch.float64)

    def best(step: Callable[[], object]) -> float:
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(rounds):
                d.add_(1e-9)
                step()
            runs.append(time.perf_counter() - t0)
        return 1e3 * min(runs)

    return best(lambda: d.mul_(1.0)), best(lambda: d.amax(1, keepdim=True))


def validation_worker(scale: float, threads: int | None) -> dict:
    """One pass at ``scale`` of VOC val in this (fresh) process; returns times and memory."""
    if threads:
        torch.set_num_threads(threads)
    clock = CLOCK
    n_images = max(1, round(VOC_VAL_IMAGES * scale))
    sizes = [min(BATCH, n_images - s) for s in range(0, n_images, BATCH)]
    data = Batches()
    z, t = data.fill(0)
    metric_set, search = build_validation()
    cold = rss_mb()  # data buffers resident, objects built, nothing updated yet
    warm_set, warm_search = build_validation()  # untimed first calls, on throwaway objects
    warm_set.update(z, t)
    warm_search.update(z, t)
    z.softmax(1).max(1)
    del warm_set, warm_search
    base = rss_mb()  # ... and every kernel and allocator pool initialized by one call each
    probe_before = cache_probe()
    contenders: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "metric set": metric_set.update,
        "search": search.update,
        "baseline": lambda z, t: z.softmax(1).max(1),
    }
    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    transient = dict.fromkeys(names, 0.0)  # peak during a call over the RSS just before it
    extra = extra_cold = 0.0  # peak during the pass over the RSS before it (after warm-up)
    exact_peak = reset_peak()
    for i, n in enumerate(sizes):
        z, t = data.fill(i, n)  # not timed
        for name in names[i % 3 :] + names[: i % 3]:
            before = rss_mb()
            reset_peak()
            t0 = clock()
            contenders[name](z, t)
            times[name].append(clock() - t0)
            peak = peak_mb()
            transient[name] = max(transient[name], peak - before)
            if name != "baseline":  # the memory the metric set and the search add
                extra = max(extra, peak - base)
                extra_cold = max(extra_cold, peak - cold)
    probe_after = cache_probe()
    t0 = clock()
    values = metric_set.compute()
    set_compute = clock() - t0
    t0 = clock()
    temperature = float(search.compute())
    search_compute = clock() - t0
    breakdown = member_breakdown(data, clock)
    return {
        "scale": scale,
        "images": n_images,
        "batches": len(sizes),
        "pixels": n_images * SIZE * SIZE,
        "times": times,
        "set_compute": set_compute,
        "search_compute": search_compute,
        "extra_mb": extra,
        "extra_cold_mb": extra_cold,
        "warmup_mb": base - cold,
        "transient_mb": transient,
        "end_mb": rss_mb() - base,
        "base_mb": base,
        "exact_peak": exact_peak,
        "temperature": temperature,
        "pixel_fraction": search.fraction_for((SIZE, SIZE)),
        "keys": sorted(values),
        "breakdown": breakdown,
        "threads": torch.get_num_threads(),
        "cache_probe": [*probe_before, *probe_after],
    }


def member_breakdown(data: Batches, clock: Callable[[], float], batches: int = 3) -> dict:
    """Median ms per batch of each step of the metric set's update: its one validation, its
    one shared pass (``row_pass`` with the union of the members' needs), each member's update
    from that pass (fresh objects; ``mce`` and ``miou_fg`` share a compute group in the set
    and are not updated there); with the baseline, for the ratio."""
    from lightning_calib.metrics.functional import _tensor_validation, row_pass

    members, _ = build_validation()
    needs = members._row_pass_needs()
    shared: dict[str, object] = {}

    def one_pass(z: torch.Tensor, t: torch.Tensor) -> None:
        shared["rows"] = row_pass(z, t, VOID, **needs)

    steps: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "(validation, once per batch)": lambda z, t: _tensor_validation(
            z, t, VOID, from_logits=True, num_classes=CLASSES
        ),
        "(shared pass, once per batch)": one_pass,
        **{
            key: (lambda z, t, m=m: m.update(z, t, rows=shared["rows"]))
            for key, m in members.items(keep_base=True)
        },
        "baseline": lambda z, t: z.softmax(1).max(1),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(batches):
        z, t = data.fill(10_000 + i)
        for name, fn in steps.items():
            t0 = clock()
            fn(z, t)
            times[name].append(clock() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def part_a(scale: float, small_scale: float, threads: int | None, clock: str) -> None:
    rows = []
    for s in (scale, small_scale):
        cmd = [sys.executable, __file__, "--worker-a", str(s), "--clock", clock]
        if threads:
            cmd += ["--threads", str(threads)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"validation worker at scale {s} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  (part a, scale {s:g}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    first = rows[0]
    print(
        f"\n### a. Validation pass: {CLASSES} classes, {SIZE}x{SIZE}, batch {BATCH}, ~10% void\n\n"
        f"Metric set: `segmentation_metrics({CLASSES}, {N_BINS}, {VOID})` = "
        f"{', '.join(k for k in first['keys'])}. Search: `TemperatureGrid` as the module builds "
        f"it (pixel_fraction={first['pixel_fraction']:g}). Baseline: `softmax(1).max(1)`. "
        "Seconds summed over the pass (metric set and search: updates + compute()); ratio: "
        "median over batches of (set + search) / baseline in the same batch (whole pass in "
        "brackets). Memory: extra peak RSS = peak during the calls of the metric set and the "
        "search minus the RSS before the pass (data buffers and objects built, one untimed "
        "warm-up call of each contender made; in brackets: before the warm-up, i.e. with the "
        "one-time initialization of kernels, thread pools and allocator arenas; goal <= 200 "
        "MB); per call = the largest peak of one call of that "
        "contender over the RSS just before the call "
        f"({'VmHWM reset per call' if first['exact_peak'] else 'lifetime peak: upper bounds'}"
        "); neither may grow with the pixel count.\n"
    )
    print(
        "| scale | images | Mpixels | metric set s | search s | baseline s | (set+search)/base "
        "(goal <= 2.0) | search/set (goal <= 0.5) | extra peak RSS MiB (goal <= 200 MB) | "
        "per call MiB: set / search / base | RSS after - before MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["times"]
        set_s = sum(t["metric set"]) + r["set_compute"]
        search_s = sum(t["search"]) + r["search_compute"]
        base_s = sum(t["baseline"])
        per_batch = statistics.median(
            (a + b) / c for a, b, c in zip(t["metric set"], t["search"], t["baseline"])
        )
        frac = statistics.median(b / a for a, b in zip(t["metric set"], t["search"]))
        e = r["transient_mb"]
        print(
            f"| {r['scale']:g} | {r['images']} | {r['pixels'] / 1e6:.0f} | {set_s:.1f} | "
            f"{search_s:.1f} | {base_s:.1f} | {per_batch:.2f}x ({(set_s + search_s) / base_s:.2f}x)"
            f" | {frac:.2f} ({search_s / set_s:.2f}) | {r['extra_mb']:.0f} "
            f"({r['extra_cold_mb']:.0f}) | "
            f"{e['metric set']:.0f} / {e['search']:.0f} / {e['baseline']:.0f} | "
            f"{r['end_mb']:.0f} |"
        )
    for r in rows:
        same0, switch0, same1, switch1 = r["cache_probe"]
        print(
            f"\nCache probe at scale {r['scale']:g} ({r['threads']} threads; see "
            "`cache_probe`): same-split operations {:.1f} / {:.1f} ms, switching splits "
            "{:.1f} / {:.1f} ms before / after the pass (ratio {:.1f} / {:.1f}).".format(
                same0, same1, switch0, switch1, switch0 / same0, switch1 / same1
            )
        )
    breakdown = first["breakdown"]
    base_ms = breakdown.pop("baseline")
    print(
        f"\nWhere the metric set's time goes: its one validation and one shared pass per "
        "batch, then each member's update from that pass (fresh objects), median ms per batch "
        f"over 3 batches (baseline {base_ms:.0f} ms). In the set, `mce` and `miou_fg` share "
        "the update of `ece` and `miou` (compute groups).\n"
    )
    print("| member | ms / batch | x baseline |")
    print("|---|---|---|")
    for name, ms in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {ms:.0f} | {ms / base_ms:.2f} |")
    per_batch_ms = {k: statistics.median(v) * 1e3 for k, v in first["times"].items()}
    print(
        "\nPer batch (median, scale {:g}): metric set {:.0f} ms, search {:.0f} ms, baseline "
        "{:.0f} ms; compute(): set {:.2f} s, search {:.3f} s. Base RSS {:.0f} MiB (warm-up "
        "added {:.0f} MiB).".format(
            first["scale"],
            per_batch_ms["metric set"],
            per_batch_ms["search"],
            per_batch_ms["baseline"],
            first["set_compute"],
            first["search_compute"],
            first["base_mb"],
            first["warmup_mb"],
        )
    )


# --- b. training step ----------------------------------------------------------------------------


def part_b(repeats: int, batch: int, size: int) -> None:
    import losses
    import models

    torch.manual_seed(0)
    net = models.DeepLabV3(CLASSES, encoder_name="resnet50").train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, CLASSES, (batch, size, size), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.1] = VOID
    contenders = {
        "CrossEntropy": losses.CrossEntropy(ignore_index=VOID),
        "ACLS": losses.ACLS(ignore_index=VOID),
    }

    def step(loss: torch.nn.Module) -> None:
        opt.zero_grad(set_to_none=True)
        loss(net(x), y).backward()
        opt.step()

    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    for name in names:  # warm-up
        step(contenders[name])
    rss_before = rss_mb()
    reset_peak()
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            t0 = CLOCK()
            step(contenders[name])
            times[name].append(CLOCK() - t0)
    step_peak = peak_mb()
    ratio = statistics.median(a / c for a, c in zip(times["ACLS"], times["CrossEntropy"]))

    # the losses alone, forward + backward on logits of the same shape
    logits = (5 * torch.randn(batch, CLASSES, size, size, generator=g)).requires_grad_()
    alone: dict[str, list[float]] = {k: [] for k in names}
    for r in range(21):
        for name in names[r % 2 :] + names[: r % 2]:
            logits.grad = None
            t0 = CLOCK()
            contenders[name](logits, y).backward()
            alone[name].append(CLOCK() - t0)
    alone_ratio = statistics.median(a / c for a, c in zip(alone["ACLS"], alone["CrossEntropy"]))

    print(
        f"\n### b. Training step: DeepLabV3-ResNet50 (output stride 8), {batch}x3x{size}x{size}, "
        f"SGD\n\nMedian of {repeats} interleaved repeats per loss after one warm-up step each; "
        "ratio: median of ACLS / CE in the same repeat. Peak RSS during the steps: "
        f"{step_peak:.0f} MiB ({step_peak - rss_before:+.0f} over the RSS before them).\n"
    )
    print("| | CrossEntropy | ACLS | ACLS / CE (goal <= 1.05) |")
    print("|---|---|---|---|")
    ce, acls = (statistics.median(times[k]) for k in names)
    print(f"| train step (s) | {ce:.2f} | {acls:.2f} | {ratio:.3f}x |")
    ce_a, acls_a = (statistics.median(alone[k]) * 1e3 for k in names)
    print(
        f"| loss alone, fwd+bwd on {batch}x{CLASSES}x{size}x{size} logits (ms) | {ce_a:.1f} | "
        f"{acls_a:.1f} | {alone_ratio:.2f}x |"
    )
    spread = ", ".join(f"{k} {min(v):.2f}-{max(v):.2f}" for k, v in times.items())
    print(f"\nRange of the step times (s): {spread}.")


# --- c. train loader -----------------------------------------------------------------------------

LOADER_SIZES = ((500, 375), (375, 500), (500, 333), (500, 500))  # (width, height)


def write_fake_voc(root: Path, n: int) -> list[str]:
    """``n`` JPEG images with palette PNG masks of VOC-like sizes and content."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    palette = [v for i in range(256) for v in (i * 37 % 256, i * 91 % 256, i * 53 % 256)]
    ids = []
    for i in range(n):
        w, h = LOADER_SIZES[i % len(LOADER_SIZES)]
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([(xx * (c + 1) + yy * (3 - c)) % 256 for c in range(3)], axis=-1).astype(
            np.float64
        )
        image += rng.normal(0, 12, image.shape)  # texture, so the JPEG is not trivially small
        mask = np.zeros((h, w), np.uint8)
        for _ in range(3):  # a few objects with a void outline, as VOC masks
            cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(30, 120)
            d = np.hypot(xx - cx, yy - cy)
            mask[d < r + 3] = VOID
            mask[d < r] = rng.integers(1, CLASSES)
        name = f"{i:06d}"
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg", quality=90
        )
        png = Image.fromarray(mask, mode="P")
        png.putpalette(palette)
        png.save(root / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    return ids


def albumentations_dataset(root: Path, ids: list[str]) -> tuple[object, str]:
    """The project's train dataset + pipeline, or an inline equivalent where it is missing."""
    try:
        from datamodules.segmentation_transforms import voc_train_transform
        from datamodules.voc import SegmentationFileDataset

        transform = voc_train_transform(crop_size=512, max_size=640, mean=MEAN, std=STD)
        ds = SegmentationFileDataset(
            ids, root / "JPEGImages", root / "SegmentationClass", transform, train=True
        )
        return ds, "datamodules.voc.SegmentationFileDataset + voc_train_transform()"
    except ImportError:
        return _InlineDataset(root, ids), "inline albumentations pipeline (same steps)"


class _InlineDataset:
    """Fallback: the same read and albumentations steps, written here."""

    def __init__(self, root: Path, ids: list[str]) -> None:
        import albumentations as A
        import cv2
        from albumentations.pytorch import ToTensorV2

        self.root, self.ids = root, ids
        self.compose = A.Compose(
            [
                A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
                A.HueSaturationValue(20, 30, 20, p=0.5),
                A.LongestMaxSize(640, mask_interpolation=cv2.INTER_NEAREST),
                A.PadIfNeeded(
                    512,
                    512,
                    position="top_left",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=VOID,
                ),
                A.RandomCrop(512, 512),
                A.HorizontalFlip(p=0.5),
                A.Normalize(MEAN, STD),
                ToTensorV2(),
            ]
        )

    def read(self, i: int):
        import numpy as np
        from PIL import Image

        name = self.ids[i]
        with Image.open(self.root / "JPEGImages" / f"{name}.jpg") as img:
            image = np.asarray(img.convert("RGB"))
        with Image.open(self.root / "SegmentationClass" / f"{name}.png") as png:
            mask = np.asarray(png)
        return image, mask

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image, mask = self.read(i)
        out = self.compose(image=image, mask=mask)
        return out["image"], out["mask"].long()


def torchvision_pipeline() -> Callable:
    """The same steps in torchvision transforms v2, jointly on the image and the mask.

    Colour jitter magnitudes follow albumentations' (brightness/contrast 0.2; HSV shifts of
    20/180 hue, ~30/255 saturation, ~20/255 value); the cost does not depend on them. The
    pad of ``RandomCrop(pad_if_needed=True)`` is split over both sides instead of the
    bottom/right only: the same amount of padding.
    """
    import numpy as np
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    compose = v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.08, saturation=0.12, hue=0.11)], p=0.5),
            v2.Resize(size=None, max_size=640),
            v2.RandomCrop(
                512, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: VOID}
            ),
            v2.RandomHorizontalFlip(0.5),
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )

    def apply(image, mask):
        img = tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        msk = tv_tensors.Mask(torch.from_numpy(np.array(mask)))
        out_image, out_mask = compose(img, msk)
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).long()

    return apply


def part_c(n_images: int, rounds: int) -> None:
    import cv2

    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            ids = write_fake_voc(root, n_images)
            ds, which = albumentations_dataset(root, ids)
            tv = torchvision_pipeline()
            a_img, a_mask = ds[0]
            t_img, t_mask = tv(*ds.read(0))
            assert a_img.shape == t_img.shape == (3, 512, 512) and a_img.dtype == t_img.dtype
            assert a_mask.shape == t_mask.shape and a_mask.dtype == t_mask.dtype == torch.int64

            def run_albumentations() -> None:
                for i in range(len(ids)):
                    ds[i]

            def run_torchvision() -> None:
                for i in range(len(ids)):
                    tv(*ds.read(i))

            def run_read() -> None:
                for i in range(len(ids)):
                    ds.read(i)

            contenders = {
                "albumentations": run_albumentations,
                "torchvision v2": run_torchvision,
                "read only": run_read,
            }
            names = list(contenders)
            for f in contenders.values():  # warm-up
                f()
            times: dict[str, list[float]] = {k: [] for k in names}
            for r in range(rounds):
                for name in names[r % 3 :] + names[: r % 3]:
                    t0 = CLOCK()
                    contenders[name]()
                    times[name].append(CLOCK() - t0)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
    ratio = statistics.median(
        t / a for a, t in zip(times["albumentations"], times["torchvision v2"])
    )
    sizes = ", ".join(f"{w}x{h}" for w, h in LOADER_SIZES)
    print(
        f"\n### c. Train loader: {n_images} VOC-like JPEG/PNG pairs ({sizes}), crop 512, one "
        f"process, 1 torch + 1 OpenCV thread\n\nalbumentations: {which}. "
        f"Images/s: median of {rounds} interleaved rounds over all images (read included).\n"
    )
    print("| pipeline | images/s | ms / image | vs albumentations |")
    print("|---|---|---|---|")
    for name in names:
        per = statistics.median(times[name]) / n_images
        rel = statistics.median(a / t for a, t in zip(times["albumentations"], times[name]))
        print(f"| {name} | {1 / per:.1f} | {per * 1e3:.1f} | {rel:.2f}x the throughput |")
    print(f"\ntorchvision v2 takes {ratio:.2f}x the time of albumentations per image.")


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of VOC val's images")
    parser.add_argument(
        "--small-scale", type=float, default=None, help="second scale (default scale / 4)"
    )
    parser.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: the calling thread's CPU time (with --threads 1), which leaves out the time "
        "other processes take on a shared machine",
    )
    parser.add_argument("--train-repeats", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--loader-images", type=int, default=40)
    parser.add_argument("--loader-rounds", type=int, default=3)
    parser.add_argument("--worker-a", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu needs --threads 1 (other threads' time is not counted)")
        CLOCK = time.thread_time
    if args.worker_a is not None:
        print(json.dumps(validation_worker(args.worker_a, args.threads)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    import albumentations
    import segmentation_models_pytorch
    import torchvision

    started = time.perf_counter()
    load = os.getloadavg()[0]
    print(
        f"## Segmentation benchmark\n\ntorch {torch.__version__}, {torch.get_num_threads()} "
        f"torch threads, {args.clock} clock, {os.cpu_count()} CPUs, 1-min load average "
        f"{load:.1f}; torchvision "
        f"{torchvision.__version__}, albumentations {albumentations.__version__}, smp "
        f"{segmentation_models_pytorch.__version__}; RSS by "
        f"{'psutil' if psutil else '/proc'}, peaks by "
        f"{'VmHWM with per-call reset' if reset_peak() else 'ru_maxrss'}."
    )
    if "a" in args.parts:
        part_a(args.scale, args.small_scale or args.scale / 4, args.threads, args.clock)
    if "b" in args.parts:
        part_b(args.train_repeats, args.train_batch, args.train_size)
    if "c" in args.parts:
        part_c(args.loader_images, args.loader_rounds)
    print(
        f"\nTotal {time.perf_counter() - started:.0f} s; 1-min load average {load:.1f} -> "
        f"{os.getloadavg()[0]:.1f}."
    )


if __name__ == "__main__":
    main()
