"""digits-VOC through the CLI: the shipped configs, exact resume, 2-process test == 1 process.

The embedded segmentation default is written once (in the VOC layout) into the cache folder
``$LIGHTNING_CALIB_CACHE`` points at; the runs here are a few batches each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CONFIGS
from test_ddp_pipeline import run_cli_in_ddp

from lightning_calib.cli import main
from lightning_calib.config import compose

VOC_CONFIGS = sorted(p for p in (CONFIGS / "voc").glob("*.yaml") if not p.stem.startswith("_"))
DV_CONFIGS = sorted(
    p for p in (CONFIGS / "digits_voc").glob("*.yaml") if not p.stem.startswith("_")
)
ACLS = str(CONFIGS / "digits_voc" / "acls.yaml")


def tiny(root: Path, epochs: int = 1, batches: int = 3) -> list[str]:
    return [
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_epochs={epochs}",
        f"--trainer.limit_train_batches={batches}",
        f"--trainer.limit_val_batches={batches}",
        f"--trainer.limit_test_batches={batches}",
        "--data.init_args.eval_batch_size=20",
    ]


def test_every_loss_has_a_voc_and_a_digits_voc_config():
    digits = {p.stem for p in (CONFIGS / "digits").glob("*.yaml") if not p.stem.startswith("_")}
    assert {p.stem for p in VOC_CONFIGS} == digits == {p.stem for p in DV_CONFIGS}


@pytest.mark.parametrize(
    "config", VOC_CONFIGS + DV_CONFIGS, ids=lambda p: f"{p.parent.name}-{p.stem}"
)
def test_segmentation_configs_parse_and_build(config, tmp_path):
    cfg = compose(config)
    assert cfg["checkpoint"]["monitor"] == "val/miou" and cfg["model"]["metrics"] == "segmentation"
    cli = main(["--config", str(config), f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert cli.model.ignore_index == 255 == cli.model.loss.ignore_index
    assert cli.model.num_classes == cli.datamodule.num_classes
    assert len(cli.model.class_names) == cli.model.num_classes


def test_digits_voc_fit_and_test_print_the_segmentation_metrics(tmp_path):
    main(["fit", "--config", ACLS, *tiny(tmp_path)])
    cli = main(["test", "--config", ACLS, *tiny(tmp_path), "--ckpt_path=best"])
    logged = cli.trainer.callback_metrics
    for key in ("test/miou", "test/ece", "test/image_ece", "test/miou_ts", "test/ece_ts",
                "test/temperature"):  # fmt: skip
        assert key in logged, key
    assert (tmp_path / "pictures" / "maps.png").is_file()


def test_digits_voc_resume_is_exact(tmp_path):
    """2 epochs + resume + 1 == 3 epochs straight, bit for bit: albumentations draws its
    per-sample seeds from torch's generator, which travels in the checkpoint."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(["fit", "--config", ACLS, *tiny(straight, epochs=3)])
    main(["fit", "--config", ACLS, *tiny(split, epochs=2)])
    main(["fit", "--config", ACLS, *tiny(split, epochs=3), "--ckpt_path=last"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 9
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_digits_voc_test_on_two_processes_equals_one(tmp_path):
    """Every test metric -- mIoU, pixel and image-wise ECE, T -- on 2 gloo processes equals
    one process (test split of 200 images, batches of 20: even shards, no sampler padding)."""
    main(["fit", "--config", ACLS, *tiny(tmp_path / "run")])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    args = ["test", "--config", ACLS, f"--ckpt_path={ckpt}",
            "--data.init_args.eval_batch_size=20"]  # fmt: skip
    single = main([*args, f"--trainer.default_root_dir={tmp_path / 'one'}"])
    expected = {k: float(v) for k, v in single.trainer.callback_metrics.items()}
    got = run_cli_in_ddp([*args, f"--trainer.default_root_dir={tmp_path / 'two'}"], tmp_path)
    got.pop("ranks")
    assert got.pop("world_size") == 2
    assert {"test/miou", "test/miou_fg", "test/ece", "test/image_ece", "test/aece",
            "test/cece", "test/temperature", "test/ece_ts"} <= set(expected)  # fmt: skip
    assert set(got) == set(expected)
    for key in sorted(expected):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key


def test_fast_dev_run_on_a_fake_voc_tree_with_acls(tmp_path):
    """The real VOC config (its datamodule, void 255, miou selection) on a fake VOC tree with
    odd image sizes: fast_dev_run fit, then test, through the CLI (a small network)."""
    from fake_voc import make_fake_voc

    make_fake_voc(tmp_path / "data", n_train=8, n_val=4)
    args = [
        "--config", str(CONFIGS / "voc" / "acls.yaml"),
        f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=2", "--data.init_args.eval_batch_size=2",
        "--data.init_args.crop_size=32", "--data.init_args.train_max_size=40",
        "--data.init_args.eval_size=32", "--model.network=models.SmallSegNet",
        f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.accelerator=cpu",
    ]  # fmt: skip
    cli = main(["fit", *args, "--trainer.fast_dev_run=true"])
    assert cli.model.loss.ignore_index == 255 and cli.model.num_classes == 21
    cli = main(["test", *args, "--trainer.limit_test_batches=2", "--allow_random_weights=true"])
    logged = cli.trainer.callback_metrics
    assert {"test/miou", "test/miou_fg", "test/ece", "test/image_ece"} <= set(logged)
