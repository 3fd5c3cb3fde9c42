"""A tiny PASCAL VOC 2012 tree in the official layout, for tests.

:func:`make_fake_voc` writes ``parent/VOCdevkit/VOC2012`` with odd-sized images, palette
masks (VOC palette) of known labels and void (255) bands, the official list files and,
optionally, the SBD-augmented ``train_aug`` part.

Mask of sample ``i`` (``h x w``): background 0, a rectangle of label :func:`object_label`
``(i)`` in the middle, a 1-px void outline around the rectangle, and a 2-px void border along
the image edge (as VOC's void bands). The image's red channel is ``10 * label`` (void: 250),
green and blue are seeded noise in ``[100, 200]``; the images are JPEG, so decoded colours are
only close to these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.digits_voc import voc_palette

__all__ = ["ODD_SIZES", "fake_mask", "label_image", "make_fake_voc", "object_label"]

#: ``(height, width)`` of the fake images, used in turn.
ODD_SIZES = ((37, 53), (61, 29), (45, 45), (29, 67))


def object_label(i: int) -> int:
    """The object label of sample ``i`` (1..20)."""
    return 1 + (7 * i) % 20


def fake_mask(i: int, h: int, w: int) -> np.ndarray:
    """The ``(h, w)`` uint8 mask of sample ``i`` (see the module docstring)."""
    mask = np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = h // 4, h - h // 4, w // 4, w - w // 4
    mask[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
    mask[y0:y1, x0:x1] = object_label(i)
    mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 255, 255, 255, 255
    return mask


def label_image(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image whose red channel encodes ``mask`` (``10 * label``, void 250)."""
    h, w = mask.shape
    img = rng.integers(100, 201, (h, w, 3), dtype=np.uint8)
    img[..., 0] = np.where(mask == 255, 250, mask.astype(np.int64) * 10)
    return img


def _write(folder: Path, name: str, mask: np.ndarray, rng: np.random.Generator) -> None:
    """The image and, unless it is SBD-only, the palette mask of ``name``."""
    Image.fromarray(label_image(mask, rng)).save(folder / "JPEGImages" / f"{name}.jpg", quality=95)
    if not name.startswith("2010_"):
        png = Image.fromarray(mask, mode="P")
        png.putpalette(voc_palette())
        png.save(folder / "SegmentationClass" / f"{name}.png")


def make_fake_voc(
    parent: str | Path,
    n_train: int = 8,
    n_val: int = 4,
    sizes: Sequence[tuple[int, int]] = ODD_SIZES,
    with_aug: bool = False,
    n_aug_extra: int = 6,
    list_seed: int | None = None,
    seed: int = 0,
) -> Path:
    """Write ``parent/VOCdevkit/VOC2012``; return that folder.

    Args:
        parent: where to write.
        n_train: ids of ``train.txt`` (``2008_000000``, ...).
        n_val: ids of ``val.txt`` (``2009_000000``, ...).
        sizes: ``(height, width)`` of the images, used in turn.
        with_aug: also write ``train_aug.txt`` (DeepLab style ``<image> <mask>`` lines) and
            ``SegmentationClassAug/``: the train ids, ``n_aug_extra`` SBD-only ids
            (``2010_000000``, ...) and the first two val ids (SBD overlaps VOC val).
        n_aug_extra: SBD-only ids of ``train_aug``.
        list_seed: shuffle the lines of the list files with this seed (``None``: sorted).
        seed: seed of the pixel noise.
    """
    rng = np.random.default_rng(seed)
    folder = Path(parent) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    train = [f"2008_{i:06d}" for i in range(n_train)]
    val = [f"2009_{i:06d}" for i in range(n_val)]
    extra = [f"2010_{i:06d}" for i in range(n_aug_extra if with_aug else 0)]
    masks = {}
    for k, name in enumerate((*train, *val, *extra)):
        masks[name] = fake_mask(k, *sizes[k % len(sizes)])
        _write(folder, name, masks[name], rng)

    def write_list(name: str, lines: list[str]) -> None:
        if list_seed is not None:
            lines = [lines[j] for j in np.random.default_rng(list_seed).permutation(len(lines))]
        (folder / "ImageSets" / "Segmentation" / name).write_text("\n".join(lines) + "\n")

    write_list("train.txt", train)
    write_list("val.txt", val)
    if with_aug:  # SegmentationClassAug holds greyscale PNGs of class ids
        (folder / "SegmentationClassAug").mkdir(exist_ok=True)
        aug_ids = [*train, *extra, *val[:2]]
        for name in aug_ids:
            Image.fromarray(masks[name], mode="L").save(
                folder / "SegmentationClassAug" / f"{name}.png"
            )
        write_list(
            "train_aug.txt", [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in aug_ids]
        )
    return folder
