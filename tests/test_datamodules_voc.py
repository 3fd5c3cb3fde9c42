"""VOC segmentation datamodule, its albumentations pipelines and the embedded digits-VOC tree."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datamodules import DigitsVOCDataModule, VOCSegmentationDataModule
from datamodules.digits_voc import (
    GENERATOR_VERSION,
    ensure_digits_voc,
    make_digits_voc,
    voc_palette,
)
from datamodules.segmentation_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    voc_eval_transform,
    voc_train_transform,
)
from datamodules.transforms import DatasetNotFoundError
from datamodules.voc import SegmentationFileDataset, hash_split
from tests.fake_voc import ODD_SIZES, fake_mask, label_image, make_fake_voc

MEAN = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
STD = np.array(IMAGENET_STD, np.float32)[:, None, None]


def pixels(image: torch.Tensor) -> np.ndarray:
    """Undo the normalization: ``(3, H, W)`` float tensor -> ``(H, W, 3)`` values in 0..255."""
    return ((image.numpy() * STD + MEAN) * 255.0).transpose(1, 2, 0)


def load(path: Path) -> np.ndarray:
    """The pixels of an image file, as stored (palette indices for palette PNGs)."""
    with Image.open(path) as img:
        return np.asarray(img)


def random_mask(rng: np.random.Generator, h: int, w: int, block: int = 5) -> np.ndarray:
    """Blocks of random labels (0..20) with a 2-px void border."""
    coarse = rng.integers(0, 21, (h // block + 1, w // block + 1)).astype(np.uint8)
    mask = np.kron(coarse, np.ones((block, block), np.uint8))[:h, :w].copy()
    mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 255, 255, 255, 255
    return mask


@pytest.fixture
def voc(tmp_path) -> Path:
    return make_fake_voc(tmp_path, n_train=10, n_val=4)


# --- transforms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", ODD_SIZES)
@pytest.mark.parametrize("size", [24, 64])  # down- and upscaling
def test_eval_transform_pads_void_and_black_and_keeps_labels(hw, size):
    rng = np.random.default_rng(0)
    h, w = hw
    mask = random_mask(rng, h, w)
    image = rng.integers(30, 256, (h, w, 3), dtype=np.uint8)  # never black
    out_img, out_mask = voc_eval_transform(size)(image, mask)
    assert out_img.shape == (3, size, size) and out_img.dtype == torch.float32
    assert out_mask.shape == (size, size) and out_mask.dtype == torch.int64
    rh, rw = A.LongestMaxSize(size)(image=image)["image"].shape[:2]
    assert max(rh, rw) == size
    px, m = pixels(out_img), out_mask.numpy()
    # The image sits at the top left; padding (bottom / right) is void and black.
    pad = np.ones((size, size), bool)
    pad[:rh, :rw] = False
    assert (m[pad] == 255).all() and np.abs(px[pad]).max(initial=0.0) < 1e-3
    assert (px[~pad].max(axis=-1) > 10).all()  # no black inside the image
    # Nearest-neighbour masks: no new label, void kept.
    assert set(np.unique(m)) <= set(np.unique(mask)) | {255}
    assert 255 in np.unique(m[~pad])


def test_eval_transform_integer_downscale_picks_source_pixels():
    rng = np.random.default_rng(1)
    mask = random_mask(rng, 40, 60, block=3)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    _, out = voc_eval_transform(30)(image, mask)
    assert torch.equal(out[:20], torch.from_numpy(mask[::2, ::2]).long())
    assert (out[20:] == 255).all()


def test_train_transform_padding_is_void_and_black_with_jitter():
    rng = np.random.default_rng(2)
    h, w = 37, 53
    mask = random_mask(rng, h, w)
    mask[mask == 255] = 0  # so every 255 of the output is padding
    grey = rng.integers(170, 220, (h, w, 1))
    image = np.clip(grey + rng.integers(-5, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    tf = voc_train_transform(crop_size=64, max_size=53)  # no resize; the crop keeps it all
    for seed in range(12):
        tf.set_random_seed(seed)
        img, m = tf(image, mask)
        px, m = pixels(img), m.numpy()
        assert img.shape == (3, 64, 64) and m.shape == (64, 64)
        black = np.abs(px).max(axis=-1) < 1e-3
        assert np.array_equal(black, m == 255)  # the padding, and only the padding
        assert black.sum() == 64 * 64 - h * w
        assert set(np.unique(m)) <= set(np.unique(mask)) | {255}


@pytest.mark.parametrize("hw", [(61, 29), (37, 53)])
def test_train_transform_keeps_image_and_mask_aligned(hw):
    """Crop and flip move image and mask together.

    The red channel encodes the label (``10 * label``). Colour jitter would change it, so
    the exact check runs without jitter (the geometry is identical); with jitter, a flat
    colour per label must stay one colour per label (jitter is pixel-wise).
    """
    rng = np.random.default_rng(3)
    h, w = hw
    mask = random_mask(rng, h, w)
    image = label_image(mask, rng)
    tf = voc_train_transform(crop_size=24, max_size=max(h, w), jitter=False)  # no resize
    crops = set()
    for seed in range(16):
        tf.set_random_seed(seed)
        img, m = tf(image, mask)
        red, m = pixels(img)[..., 0], m.numpy()
        valid = m != 255
        assert valid.mean() > 0.3
        assert np.array_equal(np.rint(red[valid] / 10), m[valid])
        crops.add(tuple(m[0]))
    assert len(crops) > 8  # different crops and flips

    # Flat colours 8 red levels apart; jitter maps equal colours to equal colours, give or
    # take one level (albucore / OpenCV round SIMD blocks and tails differently).
    colours = rng.integers(80, 180, (21, 3)).astype(np.uint8)
    colours[:, 0] = 40 + 8 * np.arange(21)
    flat = colours[np.where(mask == 255, 0, mask)]
    tf = voc_train_transform(crop_size=24, max_size=max(h, w))
    for seed in range(16):
        tf.set_random_seed(seed)
        img, m = tf(flat, mask)
        px, m = pixels(img), m.numpy()
        for label in set(np.unique(m)) - {255}:
            region = px[m == label]
            assert (region.max(0) - region.min(0)).max() < 2.5


def test_reseed_shares_one_stream_across_transforms():
    """``set_random_seed`` must not seed each transform alike (their draws would coincide)."""
    tf = voc_train_transform(crop_size=16, max_size=32)
    tf.set_random_seed(7)
    inner = [t for t in tf.compose.transforms if hasattr(t, "py_random")]
    assert all(t.py_random is tf.compose.py_random for t in inner)
    # Behaviour: flip and crop offset are independent. R = x, G = y of the source pixel.
    yy, xx = np.mgrid[0:32, 0:32]
    image = np.stack([xx * 4, yy * 4, np.zeros_like(xx)], -1).astype(np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    tf = voc_train_transform(crop_size=16, max_size=32, jitter=False)
    seen = set()
    for seed in range(64):
        tf.set_random_seed(seed)
        px = np.rint(pixels(tf(image, mask)[0]) / 4).astype(int)
        flipped = px[0, 1, 0] < px[0, 0, 0]
        seen.add((bool(flipped), bool(px[0, 0, 1] < 8)))
    assert len(seen) == 4


# --- splits --------------------------------------------------------------------------------------


def test_hash_split_depends_on_the_id_set_only():
    ids = [f"2008_{i:06d}" for i in range(50)]
    tr, va = hash_split(ids, 0.2, seed=0)
    assert len(va) == 10 and len(tr) == 40
    assert not set(tr) & set(va) and set(tr) | set(va) == set(ids)
    assert tr == sorted(tr) and va == sorted(va)
    assert hash_split(ids[::-1] + ids[:5], 0.2, seed=0) == (tr, va)
    assert hash_split(ids, 0.2, seed=1)[1] != va
    assert len(hash_split(ids, 7, seed=0)[1]) == 7
    with pytest.raises(ValueError, match="val_split"):
        hash_split(ids, 0.0, seed=0)


def test_splits_of_the_tree(tmp_path):
    a = make_fake_voc(tmp_path / "a", n_train=20, n_val=4, list_seed=1)
    b = make_fake_voc(tmp_path / "b", n_train=20, n_val=4, list_seed=2)
    assert (a / "ImageSets/Segmentation/train.txt").read_text() != (
        b / "ImageSets/Segmentation/train.txt"
    ).read_text()
    tr_a, va_a, te_a = VOCSegmentationDataModule(str(a), val_split=0.25).split_ids()
    tr_b, va_b, te_b = VOCSegmentationDataModule(str(b), val_split=0.25).split_ids()
    assert (tr_a, va_a, te_a) == (tr_b, va_b, te_b)
    assert len(va_a) == 5 and len(tr_a) == 15 and len(te_a) == 4
    assert not set(tr_a) & set(va_a)
    assert set(te_a) == {f"2009_{i:06d}" for i in range(4)}
    assert len(VOCSegmentationDataModule(str(a), val_split=3).split_ids()[1]) == 3


@pytest.mark.parametrize("level", ["tree", "VOCdevkit", "parent"])
def test_root_may_be_the_tree_or_a_parent(voc, level):
    root = {"tree": voc, "VOCdevkit": voc.parent, "parent": voc.parent.parent}[level]
    assert VOCSegmentationDataModule(str(root)).dataset_dir() == voc


def test_train_aug_used_when_present_and_val_ids_removed(tmp_path):
    voc = make_fake_voc(tmp_path, n_train=10, n_val=4, with_aug=True, n_aug_extra=6)
    dm = VOCSegmentationDataModule(str(voc), val_split=0.2, crop_size=16, eval_size=32)
    assert dm.resolved_train_list(voc) == "train_aug"
    tr, va, te = dm.split_ids()
    assert len(tr) + len(va) == 16  # 10 train + 6 SBD-only; the 2 val ids are dropped
    assert not (set(tr) | set(va)) & set(te)
    assert any(i.startswith("2010_") for i in tr + va)
    dm.setup()
    assert dm.train_set.mask_dir == voc / "SegmentationClassAug"
    _, m = dm.train_set[0]  # greyscale PNGs read as class ids
    assert set(m.unique().tolist()) <= set(range(21)) | {255}
    only = VOCSegmentationDataModule(str(voc), train_list="train", val_split=0.2)
    tr, va, _ = only.split_ids()
    assert len(tr) + len(va) == 10


def test_datamodule_reads_the_tree(voc):
    dm = VOCSegmentationDataModule(
        str(voc), batch_size=4, val_split=2, crop_size=32, train_max_size=40, eval_size=48
    )
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (8, 2, 4)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32) and y.dtype == torch.int64
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 48, 48) and y.shape == (4, 48, 48)
    # Palette PNGs are read as class ids (not colours): the known labels come back.
    ds = dm.test_set
    for i, name in enumerate(ds.ids):
        k = 10 + int(name[5:])
        image, mask = ds.read(i)
        h, w = ODD_SIZES[k % len(ODD_SIZES)]
        assert image.shape == (h, w, 3)
        assert np.array_equal(mask, fake_mask(k, h, w))


# --- reproducibility -----------------------------------------------------------------------------


def test_train_pipeline_follows_torch_generator(voc):
    dm = VOCSegmentationDataModule(str(voc), crop_size=24, train_max_size=40)
    dm.setup()
    ds = dm.train_set

    def draw():
        return [ds[i] for i in range(3)]

    def same(a, b):
        return all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))

    torch.manual_seed(0)
    first = draw()
    torch.manual_seed(0)
    assert same(draw(), first)
    torch.manual_seed(1)
    assert not same(draw(), first)
    # What the RNGState callback does on resume: restore torch's generator state.
    state = torch.get_rng_state()
    later = draw()
    torch.set_rng_state(state)
    assert same(draw(), later)
    # Evaluation is deterministic and draws nothing.
    state = torch.get_rng_state()
    a, b = dm.val_set[0], dm.val_set[0]
    assert torch.equal(a[0], b[0]) and torch.equal(torch.get_rng_state(), state)


def test_loader_workers_draw_different_crops_reproducibly(voc):
    dm = VOCSegmentationDataModule(str(voc), crop_size=24, train_max_size=40)
    ds = SegmentationFileDataset(
        ["2008_000000"] * 4,
        voc / "JPEGImages",
        voc / "SegmentationClass",
        dm.train_transform(),
        train=True,
    )

    def run():
        loader = DataLoader(
            ds, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(5)
        )
        return [x for x, _ in loader]

    a, b = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # items 0 and 1 come from different workers


# --- bad input -----------------------------------------------------------------------------------


def test_missing_root_or_folder_or_list(tmp_path, voc):
    with pytest.raises(DatasetNotFoundError, match="no `root` given"):
        VOCSegmentationDataModule(None).prepare_data()
    with pytest.raises(DatasetNotFoundError, match=r"nowhere does not exist") as err:
        VOCSegmentationDataModule(str(tmp_path / "nowhere")).prepare_data()
    assert "host.robots.ox.ac.uk" in str(err.value) and "JPEGImages" in str(err.value)
    (voc / "ImageSets/Segmentation/val.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks ImageSets/Segmentation/val.txt"):
        VOCSegmentationDataModule(str(voc.parent.parent)).setup()
    os.rename(voc / "JPEGImages", voc / "images")
    with pytest.raises(DatasetNotFoundError, match=r"VOC2012 lacks JPEGImages, "):
        VOCSegmentationDataModule(str(voc)).setup()


def test_train_aug_requested_but_missing(voc):
    with pytest.raises(DatasetNotFoundError, match=r"train_aug.txt and .*SegmentationClassAug"):
        VOCSegmentationDataModule(str(voc), train_list="train_aug").setup()


@pytest.mark.parametrize("kind", ["image", "mask"])
def test_listed_id_without_its_file(voc, kind):
    path = voc / (
        "JPEGImages/2008_000003.jpg" if kind == "image" else "SegmentationClass/2009_000001.png"
    )
    path.unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(path))) as err:
        VOCSegmentationDataModule(str(voc)).setup()
    assert "is listed in" in str(err.value)


def _test_item(voc, name):
    dm = VOCSegmentationDataModule(str(voc), eval_size=32)
    dm.setup()
    return dm.test_set, dm.test_set.ids.index(name)


def test_mask_label_out_of_range(voc):
    path = voc / "SegmentationClass/2009_000002.png"
    mask = load(path).copy()
    mask[10, 10], mask[11, 11] = 30, 21
    png = Image.fromarray(mask, mode="P")
    png.putpalette(voc_palette())  # without a palette PIL would remap the indices
    png.save(path)
    ds, i = _test_item(voc, "2009_000002")
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}.*\[21, 30\] outside the classes 0\.\.20 and 255"
    ):
        ds[i]


def test_image_and_mask_sizes_differ(voc):
    path = voc / "SegmentationClass/2009_000000.png"
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(path)
    ds, i = _test_item(voc, "2009_000000")
    h, w = ODD_SIZES[10 % len(ODD_SIZES)]  # the first val id is the 11th sample
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))} is 20x20 \(WxH\) but its image .* is {w}x{h}"
    ):
        ds[i]


def test_corrupt_or_truncated_files(voc):
    image = voc / "JPEGImages/2009_000001.jpg"
    image.write_bytes(b"not a jpeg at all")
    ds, i = _test_item(voc, "2009_000001")
    with pytest.raises(ValueError, match=rf"cannot read image file {re.escape(str(image))}"):
        ds[i]
    mask = voc / "SegmentationClass/2009_000003.png"
    mask.write_bytes(mask.read_bytes()[:60])
    ds, i = _test_item(voc, "2009_000003")
    with pytest.raises(ValueError, match=rf"cannot read mask file {re.escape(str(mask))}"):
        ds[i]


def test_colour_mask_is_refused(voc):
    path = voc / "SegmentationClass/2009_000002.png"
    with Image.open(path) as png:
        rgb = png.convert("RGB")
    rgb.save(path)
    ds, i = _test_item(voc, "2009_000002")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} has PIL mode 'RGB'"):
        ds[i]


# --- digits-VOC ----------------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_digits_voc_generation_is_deterministic(tmp_path):
    a = make_digits_voc(tmp_path / "a", n_train=12, n_val=4)
    b = make_digits_voc(tmp_path / "b", n_train=12, n_val=4)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 12 + 4 + 12 + 4 + 2 and fa == fb
    c = make_digits_voc(tmp_path / "c", n_train=12, n_val=4, seed=1)
    assert _files(c) != fa


def test_ensure_digits_voc_is_atomic_and_survives_a_lost_race(tmp_path, monkeypatch):
    import datamodules.digits_voc as dv

    target = tmp_path / "cache" / "tree"
    real = dv.make_digits_voc

    def other_process_wins(folder, **kw):
        real(folder, **kw)
        real(target, **kw)  # "another process" finishes first

    monkeypatch.setattr(dv, "make_digits_voc", other_process_wins)
    assert ensure_digits_voc(target, n_train=4, n_val=2) == target
    assert sorted(p.name for p in target.parent.iterdir()) == ["tree"]  # temp folder removed


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("LIGHTNING_CALIB_CACHE")
    os.environ["LIGHTNING_CALIB_CACHE"] = str(cache)
    start = time.perf_counter()
    dm = DigitsVOCDataModule()
    dm.prepare_data()
    seconds = time.perf_counter() - start
    yield cache, dm, seconds
    if old is None:
        del os.environ["LIGHTNING_CALIB_CACHE"]
    else:
        os.environ["LIGHTNING_CALIB_CACHE"] = old


def test_digits_voc_default_is_cached(digits_cache):
    cache, dm, seconds = digits_cache
    tree = cache / "digits_voc" / f"v{GENERATOR_VERSION}-train600-val200-size64-seed0"
    assert dm.dataset_dir() == tree
    files = [p for p in tree.rglob("*") if p.is_file()]
    assert len(files) == 600 + 200 + 600 + 200 + 2
    assert sum(p.stat().st_size for p in files) < 20e6
    assert seconds < 10  # about 1 s on a 2-core machine
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = DigitsVOCDataModule(batch_size=4)
    again.prepare_data()
    again.setup()
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert [p.name for p in tree.parent.iterdir()] == [tree.name]


@pytest.mark.usefixtures("digits_cache")
def test_digits_voc_datamodule_reads_it():
    dm = DigitsVOCDataModule()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (510, 90, 200)
    assert dm.num_classes == 11 and dm.ignore_index == 255 and len(dm.class_names) == 11
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(loader))
        assert x.shape == (16, 3, 64, 64) and y.shape == (16, 64, 64)
        assert set(y.unique().tolist()) <= set(range(11)) | {255}


def test_digits_voc_masks_and_statistics(digits_cache):
    _, dm, _ = digits_cache
    tree = dm.dataset_dir()
    values = set()
    for i in range(0, 600, 3):
        with Image.open(tree / f"SegmentationClass/train_{i:05d}.png") as png:
            assert png.mode == "P"
            mask = np.asarray(png)
        u = set(np.unique(mask).tolist())
        assert {0, 255} <= u and len(u - {0, 255}) >= 1
        values |= u
    assert values == set(range(11)) | {255}
    ids = (tree / "ImageSets/Segmentation/train.txt").read_text().split()
    x = np.stack([load(tree / f"JPEGImages/{i}.jpg") for i in ids]) / 255.0
    x = x.reshape(-1, 3)
    np.testing.assert_allclose(x.mean(0), DigitsVOCDataModule.mean, atol=1e-2)
    np.testing.assert_allclose(x.std(0), DigitsVOCDataModule.std, atol=1e-2)
