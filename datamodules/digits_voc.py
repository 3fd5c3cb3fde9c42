"""The embedded segmentation default: scikit-learn's digits pasted on canvases, as a VOC tree.

No download: :func:`make_digits_voc` writes a small tree in the exact PASCAL VOC 2012 layout
(``JPEGImages/*.jpg``, palette ``SegmentationClass/*.png`` with the VOC palette,
``ImageSets/Segmentation/{train,val}.txt``) from the 1,797 real 8x8 handwritten digits that
ship inside scikit-learn (``sklearn.datasets.load_digits``), and
:class:`DigitsVOCDataModule` reads it with the very same code as VOC
(:class:`~datamodules.voc.VOCSegmentationDataModule`): lists, hash split, file checks,
decoding, label checks, pipelines.

**A canvas** (``size x size``, 64 by default) is a dark noisy background (a random base colour
in ``[0, 50]`` per channel, a smooth random shading of +-20 and per-pixel Gaussian noise of
sigma 8) with 2 to 4 digits pasted at random positions, each upscaled (bilinear) from 8x8 to
a random 16..28 px square, in a random bright colour (``[120, 255]`` per channel, alpha =
the digit's intensity); a digit may overlap the canvas border (it is clipped there). The
mask: the digit's strokes (upscaled intensity ``>= 0.5``) are labelled ``digit + 1``, a void
band (255) covers its soft edge (intensity ``> 0.15``) and a 1-px ring around the strokes,
the rest is background 0; later digits paint over earlier ones (image and mask). So the
masks hold 0, 1..10 and 255, like VOC's 0, 1..20 and 255. The images are JPEG (quality 90),
the masks palette PNGs.

**Splits.** The official ``train`` list (``n_train`` canvases, 600 by default) is drawn from
1,297 of the 1,797 source digits and the official ``val`` list (``n_val``, 200; the test split)
from the other 500, so no handwritten digit is in both. The datamodule carves its validation
split (``val_split=0.15``) from the train ids with the VOC hash rule.

**Geometry** (the VOC recipe scaled to the 64 px canvases: VOC's ~500 px images go to a
640 px longer side and 512 px crops, a ratio 0.8): training images are resized to an 80 px
longer side (x1.25) and randomly cropped to 64x64, then flipped; val/test images stay 64x64
(``LongestMaxSize(64)`` and the padding are no-ops).

**Cache.** With ``root=None`` the tree lives in ``$LIGHTNING_CALIB_CACHE/digits_voc/<key>``
(else ``$XDG_CACHE_HOME/lightning_calib`` or ``~/.cache/lightning_calib``, as the kernel
cache of :mod:`losses._native`), where ``<key>`` holds the generator's parameters and
:data:`GENERATOR_VERSION`. It is written on first use into a temporary folder beside it and
moved into place with one ``os.replace``: concurrent writers (DDP ranks, two runs) each
build their own copy, the first rename wins and the others discard theirs, and no reader
ever sees a partial tree. Generating the default tree (800 canvases, 1,602 files) takes
1.2-2 s on a 2-core machine and 2.5 MB (6.4 MB of 4 KiB disk blocks).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from datamodules.voc import VOCSegmentationDataModule

__all__ = [
    "GENERATOR_VERSION",
    "DigitsVOCDataModule",
    "digits_voc_cache_dir",
    "ensure_digits_voc",
    "make_digits_voc",
    "voc_palette",
]

#: Bumped whenever :func:`make_digits_voc` changes its output (it keys the cache folder).
GENERATOR_VERSION = 1
#: Source digits of the official train list (the other 500 feed the val list).
_N_SOURCE_TRAIN = 1297
_STROKE, _EDGE = 0.5, 0.15


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map: 256 RGB triples, flattened (index 255 is (224, 224, 192))."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _bilinear(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize (half-pixel centres, edge clamped) in float64: the same on any machine."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(x).astype(np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), x - i0

    y0, y1, wy = axis(a.shape[0], h)
    x0, x1, wx = axis(a.shape[1], w)
    tail = (1,) * (a.ndim - 2)
    wy, wx = wy.reshape(-1, 1, *tail), wx.reshape(1, -1, *tail)
    rows = a[y0] * (1 - wy) + a[y1] * wy
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _dilate(m: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    p = np.pad(m, 1)
    h, w = m.shape
    out = np.zeros_like(m)
    for dy in range(3):
        for dx in range(3):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def _canvas(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0, 50, 3)
    shade = _bilinear(rng.uniform(-20, 20, (4, 4, 3)), size, size)
    img = base + shade + rng.normal(0, 8, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        k = int(rng.integers(len(labels)))
        s = int(rng.integers(16, 29))
        y0, x0 = (int(v) for v in rng.integers(-s // 4, size - 3 * s // 4 + 1, 2))
        colour = rng.uniform(120, 255, 3)
        # The digit in a frame one pixel wider on each side (room for the dilation ring).
        alpha = np.pad(_bilinear(images[k] / 16.0, s, s), 1)
        stroke = alpha >= _STROKE
        void = (_dilate(stroke) | (alpha > _EDGE)) & ~stroke
        # Clip the frame (top-left at y0 - 1, x0 - 1) to the canvas.
        ty, tx = y0 - 1, x0 - 1
        cy0, cx0 = max(ty, 0), max(tx, 0)
        cy1, cx1 = min(ty + s + 2, size), min(tx + s + 2, size)
        fy, fx = slice(cy0 - ty, cy1 - ty), slice(cx0 - tx, cx1 - tx)
        cy, cx = slice(cy0, cy1), slice(cx0, cx1)
        a = alpha[fy, fx, None]
        img[cy, cx] = img[cy, cx] * (1 - a) + colour * a
        mask[cy, cx][void[fy, fx]] = 255
        mask[cy, cx][stroke[fy, fx]] = labels[k] + 1
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def make_digits_voc(
    folder: str | Path, n_train: int = 600, n_val: int = 200, size: int = 64, seed: int = 0
) -> Path:
    """Write a digits segmentation tree in the VOC 2012 layout into ``folder``; return it.

    Args:
        folder: the tree's folder (the ``VOC2012`` equivalent); created, and must not hold
            files yet.
        n_train: canvases of the official ``train`` list (ids ``train_00000``, ...).
        n_val: canvases of the official ``val`` list, the test split (``val_00000``, ...).
        size: canvas side in pixels.
        seed: seed of everything drawn. Same arguments, same files (byte for byte, with the
            same libjpeg / zlib).
    """
    if n_train < 2 or n_val < 1 or size < 16:
        raise ValueError(
            f"need n_train >= 2, n_val >= 1, size >= 16; got {n_train}, {n_val}, {size}."
        )
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; make_digits_voc writes a fresh tree.")
    jpeg, seg, lists = folder / "JPEGImages", folder / "SegmentationClass", folder / "ImageSets"
    for d in (jpeg, seg, lists / "Segmentation"):
        d.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    pools = {"train": order[:_N_SOURCE_TRAIN], "val": order[_N_SOURCE_TRAIN:]}
    palette = voc_palette()
    for split, n in (("train", n_train), ("val", n_val)):
        pool = pools[split]
        images, labels = digits.images[pool], digits.target[pool]
        ids = [f"{split}_{i:05d}" for i in range(n)]
        for name in ids:
            img, mask = _canvas(rng, images, labels, size)
            Image.fromarray(img).save(jpeg / f"{name}.jpg", format="JPEG", quality=90)
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(seg / f"{name}.png", format="PNG", optimize=False)
        (lists / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return folder


def digits_voc_cache_dir() -> Path:
    """``$LIGHTNING_CALIB_CACHE/digits_voc``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    if os.environ.get("LIGHTNING_CALIB_CACHE"):
        base = Path(os.environ["LIGHTNING_CALIB_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightning_calib"
    return base / "digits_voc"


def ensure_digits_voc(
    folder: str | Path, n_train: int = 600, n_val: int = 200, size: int = 64, seed: int = 0
) -> Path:
    """``folder`` holding a digits tree: generated there atomically unless it exists.

    The tree is written into a temporary folder beside ``folder`` and renamed into place
    (``os.replace``); when another process got there first, its tree is kept and ours is
    discarded. An existing ``folder`` is used as it is.
    """
    folder = Path(folder).expanduser()
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        make_digits_voc(tmp, n_train=n_train, n_val=n_val, size=size, seed=seed)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


class DigitsVOCDataModule(VOCSegmentationDataModule):
    """Digits on canvases, segmented (11 classes: background and the digits 0-9; void 255).

    A :class:`~datamodules.voc.VOCSegmentationDataModule` on the tree of
    :func:`make_digits_voc`, generated on first use (see the module docstring). Defaults are
    sized for a CPU: 600 train canvases (510 train / 90 val after the 0.15 split), 200 test
    canvases, 64x64 crops.

    Args:
        root: the tree's folder (generated there if it does not exist); ``None`` for the cache
            folder, keyed by the generator's parameters.
        batch_size: training batch size (per process).
        eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader workers.
        val_split: fraction (``< 1``) or count (``>= 1``) of the train canvases held out.
        split_seed: seed of that split.
        crop_size: side of the training crop.
        train_max_size: longer side of the training images before the crop.
        eval_size: val/test images: longer side resized to this, padded to a square.
        pin_memory: pin host memory in the loaders.
        n_train: canvases of the official train list (generator parameter).
        n_val: canvases of the official val list, the test split (generator parameter).
        data_seed: the generator's seed.
    """

    num_classes: ClassVar[int] = 11
    class_names: ClassVar[tuple[str, ...] | None] = ("background", *(str(d) for d in range(10)))
    # Per-channel mean / std of the pixels (in [0, 1]) of the JPEG-decoded images of the
    # default tree's train list (600 canvases, size 64, seed 0), computed once with
    #   x = np.stack([np.asarray(Image.open(p)) for p in train_images]) / 255.0
    #   x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0)
    # (the test list's 200 canvases give (0.164, 0.164, 0.167) / (0.168, 0.169, 0.169)).
    mean: ClassVar[tuple[float, ...]] = (0.1595, 0.1638, 0.1614)
    std: ClassVar[tuple[float, ...]] = (0.1664, 0.1662, 0.1681)
    dataset_name: ClassVar[str] = "digits-VOC"
    source: ClassVar[str] = (
        "datamodules.digits_voc.make_digits_voc (DigitsVOCDataModule writes the tree on first "
        "use; delete a damaged tree to have it written again)"
    )
    canvas_size: ClassVar[int] = 64

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_split: float = 0.15,
        split_seed: int = 0,
        crop_size: int = 64,
        train_max_size: int = 80,
        eval_size: int = 64,
        pin_memory: bool = False,
        n_train: int = 600,
        n_val: int = 200,
        data_seed: int = 0,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            val_split=val_split,
            split_seed=split_seed,
            train_list="train",
            crop_size=crop_size,
            train_max_size=train_max_size,
            eval_size=eval_size,
            pin_memory=pin_memory,
        )
        self.n_train, self.n_val, self.data_seed = n_train, n_val, data_seed

    def tree_dir(self) -> Path:
        """Where the tree is (or will be): ``root``, else the keyed cache folder."""
        if self.root is not None:
            return Path(self.root).expanduser()
        key = (
            f"v{GENERATOR_VERSION}-train{self.n_train}-val{self.n_val}-size{self.canvas_size}"
            f"-seed{self.data_seed}"
        )
        return digits_voc_cache_dir() / key

    def prepare_data(self) -> None:
        """Generate the tree if it is not there yet."""
        self.dataset_dir()

    def dataset_dir(self) -> Path:  # noqa: D102
        folder = ensure_digits_voc(
            self.tree_dir(),
            n_train=self.n_train,
            n_val=self.n_val,
            size=self.canvas_size,
            seed=self.data_seed,
        )
        return self._locate(folder)
