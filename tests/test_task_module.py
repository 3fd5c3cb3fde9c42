"""The one task module serves classification and dense prediction; presets; data facts.

* metric presets: declared compute groups (the top-1/top-5 merge bug), one validation per
  batch whatever the member order;
* a dense toy task (1x1-conv network, 4 classes, void pixels) through the same module and the
  CLI: the datamodule's ``ignore_index`` reaches the loss, the metrics and the temperature
  search; a contradicting one is refused naming both values;
* every logged metric is the same at evaluation batch sizes 1, 8 and 512 on a digits checkpoint.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import CONFIGS, tiny_trainer_args
from dense_toy import VOID, PixelNet, ToyDenseDataModule
from torchmetrics.classification import MulticlassCalibrationError

import losses
from lightning_calib.cli import main
from lightning_calib.metrics import ECE, NLL, TopKAccuracy
from lightning_calib.metrics.presets import (
    PRESETS,
    MetricSet,
    classification_metrics,
    get_preset,
    segmentation_metrics,
)
from lightning_calib.module import CalibrationModule, reconcile_ignore_index

# --------------------------------------------------------------------------- metric presets


def test_top5_is_not_merged_with_top1_when_the_first_batch_is_all_correct():
    """Regression: torchmetrics' default compute groups merged acc and top5 for good when the
    first batch was 100% top-1 correct; top5 then reported top-1 accuracy."""
    metrics = classification_metrics(num_classes=10)
    z = torch.eye(10)[:4] * 5.0  # 4 rows, each correct at top-1
    metrics.update(z, torch.arange(4))
    second = torch.arange(10, 0, -1).float().repeat(4, 1)  # ranking 0 > 1 > ... > 9
    metrics.update(second, torch.tensor([1, 2, 3, 4]))  # wrong at top-1, right at top-5
    out = metrics.compute()
    assert out["acc"].item() == pytest.approx(0.5)
    assert out["top5"].item() == pytest.approx(1.0)
    assert metrics.compute_groups[0] == ["ece", "mce"]
    assert all(len(group) == 1 for group in list(metrics.compute_groups.values())[1:])


def test_shared_group_gives_the_values_of_separate_metrics():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(30, 10, generator=g) * 3, torch.randint(0, 10, (30,), generator=g))
               for _ in range(3)]  # fmt: skip
    grouped = classification_metrics(10)
    alone = {k: m.clone() for k, m in classification_metrics(10).items()}
    for z, y in batches:
        grouped.update(z, y)
        for m in alone.values():
            m.update(z, y)
    out = grouped.compute()
    for key, metric in alone.items():
        assert out[key].item() == pytest.approx(metric.compute().item(), rel=1e-12), key


@pytest.mark.parametrize("order", list(itertools.permutations(["acc", "nll", "ece"])))
def test_validation_does_not_depend_on_the_member_order(order):
    members = {
        "acc": TopKAccuracy(k=1, validate_args=False),
        "nll": NLL(validate_args=False),
        "ece": ECE(validate_args=False),
    }
    metrics = MetricSet({k: members[k] for k in order}, num_classes=3)
    with pytest.raises(ValueError, match=r"`target` holds the value 3; expected class indices"):
        metrics.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="must be finite"):
        metrics.update(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="expected num_classes=3"):
        metrics.update(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_mbls_preset_adds_the_batch_averaged_ece():
    keys = set(get_preset("segmentation_mbls")(21, 15, VOID))
    assert keys == set(segmentation_metrics(21, 15, VOID)) | {"batch_ece"}
    assert "miou_fg" in keys and "miou_fg" not in segmentation_metrics(21, 15, VOID, None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_declares_its_groups_and_validates_once(name):
    metrics = get_preset(name)(5, 15, VOID)
    assert isinstance(metrics, MetricSet) and metrics.validate_args
    assert all(not getattr(m, "validate_args", False) for m in metrics.values())
    assert all(getattr(m, "ignore_index", VOID) == VOID for m in metrics.values())
    with pytest.raises(ValueError, match="holds the value 7"):
        metrics.update(torch.zeros(1, 5, 2, 2), torch.tensor([[[0, 7], [VOID, 1]]]))


def test_metric_set_refuses_implicit_groups_and_contradicting_members():
    with pytest.raises(ValueError, match="compute_groups"):
        MetricSet({"ece": ECE()}, num_classes=3, compute_groups=True)
    with pytest.raises(
        ValueError, match=r"'ece' was built with ignore_index=-1 .*ignore_index=255"
    ):
        MetricSet({"ece": ECE(ignore_index=-1)}, num_classes=3, ignore_index=255)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`metrics` must be one of .*'classification'.*nope"):
        get_preset("nope")
    assert get_preset("lightning_calib.metrics.presets.segmentation_metrics") is (
        segmentation_metrics
    )


# ------------------------------------------------------------------- ignore_index reconcile


@pytest.mark.parametrize(
    ("loss", "data", "after"),
    [
        (losses.ACLS(), 255, 255),  # unset (-100) takes the data's
        (torch.nn.CrossEntropyLoss(), 255, 255),
        (losses.ACLS(ignore_index=255), 255, 255),
        (losses.ACLS(), None, -100),  # a negative index drops nothing on classification data
    ],
)
def test_loss_takes_the_data_ignore_index(loss, data, after):
    reconcile_ignore_index(loss, data)
    assert loss.ignore_index == after


@pytest.mark.parametrize(("declared", "data"), [(0, 255), (254, 255), (3, None)])
def test_a_contradicting_loss_ignore_index_is_refused(declared, data):
    loss = losses.FocalLoss(ignore_index=declared)
    with pytest.raises(ValueError, match=rf"ignore_index={declared} but the data declares "
                                         rf"ignore_index={data}"):  # fmt: skip
        reconcile_ignore_index(loss, data)


def test_module_refuses_a_metric_factory_with_another_ignore_index():
    def factory(num_classes, n_bins, ignore_index):
        from torchmetrics import MetricCollection

        return MetricCollection({"ece": ECE(n_bins=n_bins, ignore_index=0)})

    with pytest.raises(ValueError, match=r"'ece' was built with ignore_index=0 .*ignore_index=255"):
        CalibrationModule(PixelNet, 4, metrics=factory, ignore_index=VOID)


# ------------------------------------------------------------------------- the dense toy


def _valid_rows(logits, target):
    z = logits.movedim(1, -1).reshape(-1, logits.shape[1]).double()
    y = target.reshape(-1)
    keep = y != VOID
    return z[keep], y[keep]


def test_dense_toy_through_the_task_module(tmp_path):
    """The datamodule's ignore_index reaches loss, metrics and temperature search; every
    pooled metric equals an independent computation over the valid pixels."""
    dm = ToyDenseDataModule(batch_size=4, eval_batch_size=5)
    model = CalibrationModule(
        PixelNet, dm.num_classes, loss=losses.ACLS(), metrics="segmentation",
        ignore_index=dm.ignore_index, class_names=dm.class_names,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.5), temperature_criterion="nll",
        temperature_pixel_fraction=1.0,  # every pixel: compared with the full search below
    )  # fmt: skip
    assert model.loss.ignore_index == VOID
    assert model.temperature_search.ignore_index == VOID
    assert all(m.ignore_index == VOID for m in model.val_metrics.values())
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=8, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, dm)
    out = trainer.test(model, dm, verbose=False)[0]

    dm.setup()
    x, y = dm.test_set.tensors
    with torch.no_grad():
        logits = model.eval()(x)
    z, t = _valid_rows(logits, y)
    pred = z.argmax(1)
    assert out["test/acc"] == pytest.approx((pred == t).double().mean().item(), rel=1e-6)
    assert out["test/nll"] == pytest.approx(F.cross_entropy(z, t).item(), rel=1e-6)
    ref_ece = MulticlassCalibrationError(4, n_bins=15, norm="l1")(z.float().softmax(1), t)
    assert out["test/ece"] == pytest.approx(ref_ece.item(), abs=1e-5)
    confusion = np.zeros((4, 4))
    np.add.at(confusion, (t.numpy(), pred.numpy()), 1)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert out["test/miou"] == pytest.approx(float(np.mean(iou)), rel=1e-6)
    assert out["test/miou_fg"] == pytest.approx(float(np.mean(iou[1:])), rel=1e-6)
    assert out["test/acc"] > 0.5  # learnable: well above chance (0.25)
    # image-wise: the mean over images of each image's pixel ECE
    per_image = []
    for i in range(len(x)):
        zi, ti = _valid_rows(logits[i : i + 1], y[i : i + 1])
        per_image.append(MulticlassCalibrationError(4, n_bins=15)(zi.float().softmax(1), ti))
    assert out["test/image_ece"] == pytest.approx(torch.stack(per_image).mean().item(), abs=1e-5)

    # the temperature: the grid's best NLL over the *valid* validation pixels only
    xv, yv = dm.val_set.tensors
    with torch.no_grad():
        zv, tv = _valid_rows(model(xv), yv)
    grid = torch.arange(1, 101, dtype=torch.float64) / 10
    nll = torch.stack([F.cross_entropy(zv / t_, tv) for t_ in grid])
    assert model.temperature.item() == pytest.approx(grid[nll.argmin()].item(), rel=1e-6)
    assert out["test/nll_ts"] == pytest.approx(
        F.cross_entropy(z / model.temperature.double(), t).item(), rel=1e-5
    )
    assert set(model.test_reliability) == {"raw", "ts"}
    assert int(model.test_reliability["raw"]["count"].sum()) == len(t)


def test_dense_network_of_the_wrong_size_is_a_clear_error(tmp_path):
    class Shrinking(PixelNet):
        def forward(self, x):
            return super().forward(x)[..., :-1, :-1]

    model = CalibrationModule(Shrinking, 4, metrics="segmentation", ignore_index=VOID)
    trainer = pl.Trainer(accelerator="cpu", fast_dev_run=True, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"for a target of shape \(4, 8, 8\).*upsample"):
        trainer.fit(model, ToyDenseDataModule())


DENSE_CLI = [
    "--data=dense_toy.ToyDenseDataModule",
    "--model.network=dense_toy.PixelNet",
    "--model.metrics=segmentation",
    "--model.loss=losses.ACLS",
    "--checkpoint.monitor=val/miou",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]


def test_dense_toy_through_the_cli_typed_once(tmp_path):
    args = [*DENSE_CLI, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1"]
    cli = main(["fit", *args])
    model = cli.model
    assert model.ignore_index == VOID and model.loss.ignore_index == VOID
    assert model.class_names == ToyDenseDataModule.class_names
    assert {"val/miou", "val/image_ece", "val/ece", "val/temperature"} <= set(
        cli.trainer.callback_metrics
    )
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_cli_refuses_a_loss_ignore_index_that_contradicts_the_data(tmp_path):
    args = [*DENSE_CLI, f"--trainer.default_root_dir={tmp_path}",
            "--model.loss.init_args.ignore_index=0"]  # fmt: skip
    with pytest.raises(ValueError, match="ignore_index=0 but the data declares ignore_index=255"):
        main(args, run=False)
    assert not (tmp_path / "checkpoints").exists()


def test_cli_does_not_let_the_model_ignore_index_be_typed(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["lightning-calib", *DENSE_CLI, "--model.ignore_index=0"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "ignore_index" in capsys.readouterr().err


# ------------------------------------------------------------- batch-size independence


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A digits model trained for two epochs (the deterministic merge regression is
    ``test_top5_is_not_merged_with_top1_when_the_first_batch_is_all_correct``)."""
    root = tmp_path_factory.mktemp("digits_ckpt")
    main(["fit", "--config", str(CONFIGS / "digits" / "ce.yaml"),
          *tiny_trainer_args(root, epochs=2, batches=100)])  # fmt: skip
    return root / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_every_logged_metric_is_independent_of_the_eval_batch_size(
    digits_checkpoint, tmp_path, stage
):
    results = {}
    for bs in (1, 8, 512):
        root = tmp_path / f"bs{bs}"
        cli = main([
            stage, "--config", str(CONFIGS / "digits" / "ce.yaml"),
            f"--ckpt_path={digits_checkpoint}", f"--data.init_args.eval_batch_size={bs}",
            "--model.network.init_args.width=4", f"--trainer.default_root_dir={root}",
 "--trainer.precision=64-true",
        ])  # fmt: skip
        logged = cli.trainer.callback_metrics
        results[bs] = {k: float(v) for k, v in logged.items()}
        # the float64 values the module keeps (Lightning's log rounds to float32)
        assert {k for k in logged if "loss" not in k} == set(cli.model.epoch_metrics)
        results[bs].update({k: float(v) for k, v in cli.model.epoch_metrics.items()})
    prefix = "val/" if stage == "validate" else "test/"
    keys = set(results[512])
    assert {f"{prefix}acc", f"{prefix}top5", f"{prefix}ece", f"{prefix}aece"} <= keys
    if stage == "test":
        assert {"test/ece_ts", "test/top5_ts", "test/temperature"} <= keys
    for bs in (1, 8):
        assert set(results[bs]) == keys
        for key in sorted(keys):
            if "acc" in key or "top5" in key:  # counts: exactly equal
                assert results[bs][key] == results[512][key], (key, bs)
                continue
            # float64 network (in float32 the logits themselves differ in their last bits
            # between batch sizes: other conv kernels): equal up to summation order
            assert results[bs][key] == pytest.approx(results[512][key], rel=1e-9, abs=1e-12), (
                key, bs
            )  # fmt: skip
    for result in results.values():
        for key in result:
            if key.endswith("top5") or key.endswith("top5_ts"):
                assert result[key] >= result[key.replace("top5", "acc")]


def test_test_pictures_of_a_dense_run(tmp_path):
    """``test`` writes the reliability diagram and per-pixel maps into the run folder and
    keeps an earlier test's pictures."""
    from PIL import Image

    args = [*DENSE_CLI, f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1"]
    main(["fit", *args])
    for _ in range(2):
        main(["test", *args, "--ckpt_path=best"])
    pictures = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert pictures == ["maps-1.png", "maps.png", "maps_ts-1.png", "maps_ts.png",
                        "reliability-1.png", "reliability.png"]  # fmt: skip
    with Image.open(tmp_path / "pictures" / "maps.png") as image:
        assert image.size[0] > 500 and image.size[1] > 400  # 5 columns x 4 images


def test_class_argmax_equals_torch_argmax_ties_included():
    from lightning_calib.metrics.presets import class_argmax

    g = torch.Generator().manual_seed(0)
    z = torch.randint(-2, 3, (3, 7, 5, 4), generator=g).float()  # many ties
    assert torch.equal(class_argmax(z), z.argmax(1))
    z = torch.randn(2, 300, 3, 3, generator=g)  # more classes than uint8 holds
    assert torch.equal(class_argmax(z), z.argmax(1))
