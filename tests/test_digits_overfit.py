"""The over-fitting digits regime: the datamodule's knobs and ``configs/digits_overfit``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CONFIGS, tiny_trainer_args

from datamodules import DigitsDataModule
from lightning_calib.cli import main
from lightning_calib.config import compose

OVERFIT = sorted(
    p for p in (CONFIGS / "digits_overfit").glob("*.yaml") if not p.stem.startswith("_")
)


def _labels() -> np.ndarray:
    return DigitsDataModule().images()[1].numpy()


# --- train_per_class --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 20])
def test_train_per_class_is_a_stratified_subset_of_the_train_split(n):
    full_tr, full_va, full_te = DigitsDataModule().split_indices()
    tr, va, te = DigitsDataModule(train_per_class=n).split_indices()
    assert len(tr) == 10 * n and len(set(tr.tolist())) == 10 * n
    assert np.bincount(_labels()[tr], minlength=10).tolist() == [n] * 10
    assert set(tr.tolist()) <= set(full_tr.tolist())
    assert np.array_equal(va, full_va) and np.array_equal(te, full_te)  # val/test unchanged
    assert np.array_equal(tr, np.sort(tr))


def test_train_per_class_is_deterministic_and_seeded():
    a = DigitsDataModule(train_per_class=20).split_indices()[0]
    b = DigitsDataModule(train_per_class=20).split_indices()[0]
    assert np.array_equal(a, b)
    other = DigitsDataModule(train_per_class=20, split_seed=1).split_indices()[0]
    assert not np.array_equal(a, other)


def test_train_per_class_sizes_the_train_set():
    dm = DigitsDataModule(train_per_class=20, shift=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (200, 360, 540)


def test_defaults_keep_the_digits_data_exactly():
    dm = DigitsDataModule()
    assert dm.train_per_class is None and dm.occlusion == 0 and dm.noise_std == 0.0
    explicit = DigitsDataModule(train_per_class=None, occlusion=0, noise_std=0.0)
    assert torch.equal(dm.images()[0], explicit.images()[0])
    for a, b in zip(dm.split_indices(), explicit.split_indices()):
        assert np.array_equal(a, b)
    assert len(dm.split_indices()[0]) == 897


# --- occlusion and noise ----------------------------------------------------------------------


def _raw(dm: DigitsDataModule) -> torch.Tensor:
    """The images back in ``[0, 1]`` (undo the normalization), one channel."""
    x, _ = dm.images()
    std, mean = torch.tensor(dm.std).view(1, 3, 1, 1), torch.tensor(dm.mean).view(1, 3, 1, 1)
    return (x * std + mean)[:, 0]


def test_occlusion_blanks_one_square_per_image():
    clean = _raw(DigitsDataModule())
    occluded = _raw(DigitsDataModule(occlusion=6))
    changed = (clean - occluded).abs() > 1e-5
    assert torch.all(occluded[changed].abs() < 1e-5)  # only set to the background
    blank = occluded.abs() < 1e-5
    for img in blank:  # each image holds a 6x6 all-background square
        windows = img.float().unfold(0, 6, 1).unfold(1, 6, 1).sum((-1, -2))
        assert float(windows.max()) == 36.0
    assert changed.any(dim=(1, 2)).float().mean() > 0.9  # most patches hit ink


def test_noise_is_added_and_clamped():
    clean = _raw(DigitsDataModule())
    noisy = _raw(DigitsDataModule(noise_std=0.2))
    assert noisy.min() >= -1e-5 and noisy.max() <= 1 + 1e-5
    diff = noisy - clean
    inside = (clean > 0.05) & (clean < 0.95) & (noisy > 1e-3) & (noisy < 1 - 1e-3)
    assert 0.15 < float(diff[inside].std()) < 0.25


@pytest.mark.parametrize("kwargs", [{"occlusion": 6}, {"noise_std": 0.3}])
def test_corruption_is_fixed_across_calls_epochs_and_splits(kwargs):
    dm = DigitsDataModule(shift=0, **kwargs)
    dm.setup()
    again = DigitsDataModule(shift=0, **kwargs)
    again.setup()
    for part in ("train_set", "val_set", "test_set"):
        a, b = getattr(dm, part), getattr(again, part)
        assert torch.equal(a.images, b.images)
        assert torch.equal(a[5][0], a[5][0])  # no per-access (per-epoch) draw
    # every split is cut from the same corrupted images (i.i.d. splits, not a shift)
    x, _ = dm.images()
    tr, va, te = (torch.from_numpy(i) for i in dm.split_indices())
    assert torch.equal(dm.train_set.images, x[tr]) and torch.equal(dm.test_set.images, x[te])
    assert torch.equal(dm.val_set.images, x[va])
    # through the loaders, epoch after epoch
    first = torch.cat([b[0] for b in dm.test_dataloader()])
    second = torch.cat([b[0] for b in dm.test_dataloader()])
    assert torch.equal(first, second) and torch.equal(first, dm.test_set.images)
    # a different split seed draws other corruptions
    other = DigitsDataModule(split_seed=1, **kwargs).images()[0]
    assert not torch.equal(x, other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_per_class": 0}, r"`train_per_class` must be None .* int >= 1; got 0"),
        ({"train_per_class": 2.5}, r"`train_per_class` .* got 2\.5"),
        ({"train_per_class": True}, r"`train_per_class` .* got True"),
        ({"occlusion": -1}, r"`occlusion` must be an int in \[0, image_size=16\].* got -1"),
        ({"occlusion": 17}, r"`occlusion` .* got 17"),
        ({"occlusion": 2.5}, r"`occlusion` .* got 2\.5"),
        ({"noise_std": -0.1}, r"`noise_std` must be a finite float >= 0.* got -0\.1"),
        ({"noise_std": float("nan")}, r"`noise_std` .* got nan"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_train_per_class_larger_than_a_class_is_refused():
    smallest = int(np.bincount(_labels()[DigitsDataModule().split_indices()[0]]).min())
    DigitsDataModule(train_per_class=smallest).split_indices()
    dm = DigitsDataModule(train_per_class=smallest + 1)
    with pytest.raises(ValueError, match=rf"`train_per_class` must be <= {smallest} .*"):
        dm.split_indices()


# --- the configs -------------------------------------------------------------------------------


def _recipe(cfg: dict) -> dict:
    """A composed config less its loss and run folder: what every loss shares."""
    model = {k: v for k, v in cfg["model"].items() if k != "loss"}
    trainer = {k: v for k, v in cfg["trainer"].items() if k != "default_root_dir"}
    return {**cfg, "model": model, "trainer": trainer}


def test_every_loss_has_a_digits_overfit_config_with_the_digits_loss():
    digits = {p.stem for p in (CONFIGS / "digits").glob("*.yaml") if not p.stem.startswith("_")}
    assert {p.stem for p in OVERFIT} == digits
    ce = _recipe(compose(CONFIGS / "digits_overfit" / "ce.yaml"))
    for path in OVERFIT:
        ours, theirs = compose(path), compose(CONFIGS / "digits" / path.name)
        assert ours["model"]["loss"] == theirs["model"]["loss"], path.stem
        assert ours["trainer"]["default_root_dir"] == f"runs/digits_overfit/{path.stem}"
        assert _recipe(ours) == ce, f"{path.stem}: only the loss and the run folder may differ"


@pytest.mark.parametrize("config", OVERFIT, ids=lambda p: p.stem)
def test_digits_overfit_configs_build(config, tmp_path):
    cli = main(["--config", str(config), f"--trainer.default_root_dir={tmp_path}"], run=False)
    expected = compose(config)["model"]["loss"]["class_path"].split(".")[-1]
    assert type(cli.model.loss).__name__ == expected
    dm = cli.datamodule
    assert (dm.train_per_class, dm.occlusion, dm.shift, dm.batch_size) == (20, 6, 0, 16)
    assert cli.model.num_classes == dm.num_classes == 10
    assert cli.trainer.max_epochs == 100
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"


def test_digits_overfit_ce_fits_and_tests(tmp_path):
    config = str(CONFIGS / "digits_overfit" / "ce.yaml")
    args = tiny_trainer_args(tmp_path, epochs=1, batches=2)
    main(["fit", "--config", config, *args])
    cli = main(["test", "--config", config, *args, "--ckpt_path=best"])
    assert "test/temperature" in cli.trainer.callback_metrics
    assert len(cli.datamodule.train_set) == 200
