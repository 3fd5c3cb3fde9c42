"""CalibrationModule: loss parts logging, plain losses, temperature scaling, checkpoints."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from datamodules import DigitsDataModule
from lightning_calib.module import CalibrationModule, logit_statistics
from lightning_calib.temperature import TemperatureGrid, temperature_values
from models import ResNet


class CountingLoss(nn.Module):
    """A two-part loss that counts how often it is evaluated."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward_with_parts(self, logits, target):
        self.calls += 1
        ce = F.cross_entropy(logits, target)
        reg = logits.pow(2).mean()
        return ce + 0.5 * reg, {"ce": ce, "reg": reg}

    def forward(self, logits, target):
        return self.forward_with_parts(logits, target)[0]


def tiny_module(loss=None, **kwargs) -> CalibrationModule:
    net = functools.partial(ResNet, depth=8, width=4)
    return CalibrationModule(network=net, num_classes=10, loss=loss, **kwargs)


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=2,
        limit_test_batches=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )  # fmt: skip
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def test_loss_parts_are_logged_from_one_evaluation(tmp_path):
    loss = CountingLoss()
    model = tiny_module(loss)
    tr = trainer(tmp_path)
    tr.fit(model, DigitsDataModule(batch_size=16))
    assert loss.calls == 3 + 2  # one call per train and per val batch, never twice
    m = tr.logged_metrics
    for stage in ("train", "val"):
        ce, reg, total = m[f"{stage}/loss_ce" + ("_epoch" if stage == "train" else "")], \
            m[f"{stage}/loss_reg" + ("_epoch" if stage == "train" else "")], \
            m[f"{stage}/loss" + ("_epoch" if stage == "train" else "")]  # fmt: skip
        assert torch.isclose(total, ce + 0.5 * reg, rtol=1e-5)


def test_plain_torch_loss_works_without_parts(tmp_path):
    model = tiny_module(nn.CrossEntropyLoss())
    tr = trainer(tmp_path)
    tr.fit(model, DigitsDataModule(batch_size=16))
    assert "train/loss_step" in tr.logged_metrics
    assert not any(k.startswith("train/loss_") and "step" not in k and "epoch" not in k
                   for k in tr.logged_metrics)  # fmt: skip
    assert not any("loss_ce" in k for k in tr.logged_metrics)


def test_val_and_test_metrics_are_namespaced_and_exact(tmp_path):
    model = tiny_module()
    dm = DigitsDataModule(batch_size=16, eval_batch_size=50)
    tr = trainer(tmp_path, limit_test_batches=None)
    tr.fit(model, dm)
    out = tr.test(model, dm)[0]
    assert {"test/acc", "test/nll", "test/ece", "test/aece", "test/cece", "test/top5",
            "test/brier", "test/mce", "test/ece_ts", "test/temperature"} <= out.keys()  # fmt: skip
    # exact against the whole test split computed in one go
    model.eval()
    xs, ys = zip(*[dm.test_set[i] for i in range(len(dm.test_set))])
    with torch.no_grad():
        logits = model(torch.stack(xs)).double()
    y = torch.stack(ys)
    assert out["test/acc"] == pytest.approx(
        float((logits.argmax(1) == y).double().mean()), abs=1e-6
    )
    assert out["test/nll"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    t = out["test/temperature"]
    assert out["test/nll_ts"] == pytest.approx(float(F.cross_entropy(logits / t, y)), rel=1e-5)


def test_cli_checkpoint_loads_outside_the_cli(tmp_path):
    from conftest import CONFIGS, tiny_trainer_args

    from lightning_calib.cli import main

    cfg = str(CONFIGS / "digits" / "mbls.yaml")
    main(["fit", "--config", cfg, *tiny_trainer_args(tmp_path), "--trainer.max_epochs=1"])
    model = CalibrationModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert type(model.loss).__name__ == "MbLS"
    assert model.network.fc.out_features == 10
    x = torch.zeros(2, 3, 16, 16)
    assert model.eval()(x).shape == (2, 10)


def test_module_checkpoint_from_python_needs_the_modules_again(tmp_path):
    model = tiny_module(CountingLoss())
    tr = trainer(tmp_path, enable_checkpointing=True, max_epochs=1)
    tr.fit(model, DigitsDataModule(batch_size=16))
    path = tr.checkpoint_callback.best_model_path
    assert "network" not in model.hparams and "loss" not in model.hparams
    net = functools.partial(ResNet, depth=8, width=4)
    loaded = CalibrationModule.load_from_checkpoint(path, network=net, loss=CountingLoss())
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_wrong_network_output_is_a_clear_error(tmp_path):
    model = CalibrationModule(network=nn.Sequential(nn.Flatten(), nn.Linear(768, 7)),
                                 num_classes=10)  # fmt: skip
    with pytest.raises(ValueError, match=r"expected \(batch, 10, \.\.\.\) for num_classes=10"):
        trainer(tmp_path).fit(model, DigitsDataModule(batch_size=16))


def test_logit_statistics_by_hand():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    s = logit_statistics(z)
    # mean distance: row0 (0+2+3)/2 = 2.5, row1 (2+0+0)/2 = 1
    assert s["logit_dist_mean"].item() == pytest.approx(1.75)
    assert s["logit_dist_max"].item() == pytest.approx((3 + 2) / 2)
    assert s["logit_margin"].item() == pytest.approx((2 + 0) / 2)
    seg = logit_statistics(z.T.reshape(1, 3, 2, 1))  # the same rows as a 1x2 image
    assert seg["logit_dist_mean"].item() == pytest.approx(1.75)


def _reference_grid(logits, target, temps, n_bins=15):
    """float64 NumPy: ECE and NLL of softmax(z / T) for each T."""
    z = logits.numpy().astype(np.float64)
    y = target.numpy()
    eces, nlls = [], []
    for t in temps:
        s = z / t
        s = s - s.max(1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
        conf, correct = p.max(1), (p.argmax(1) == y)
        nlls.append(-np.log(p[np.arange(len(y)), y]).mean())
        bins = np.clip(np.ceil(conf * n_bins) - 1, 0, n_bins - 1).astype(int)
        ece = 0.0
        for b in range(n_bins):
            m = bins == b
            if m.any():
                ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
        eces.append(ece)
    return np.array(eces), np.array(nlls)


@pytest.mark.parametrize("criterion", ["ece", "nll"])
def test_temperature_grid_matches_reference_over_batches(criterion):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5, generator=g) * 4
    target = torch.where(torch.rand(300, generator=g) < 0.6, logits.argmax(1),
                         torch.randint(0, 5, (300,), generator=g))  # fmt: skip
    target[::17] = -100
    grid = TemperatureGrid((0.5, 10.0, 0.25), criterion=criterion, ignore_index=-100)
    for part in range(3):
        grid.update(logits[part * 100 : (part + 1) * 100], target[part * 100 : (part + 1) * 100])
    keep = target != -100
    temps = temperature_values((0.5, 10.0, 0.25)).numpy()
    ece, nll = _reference_grid(logits[keep], target[keep], temps)
    np.testing.assert_allclose(grid.scores().numpy(), ece if criterion == "ece" else nll,
                               rtol=1e-6, atol=1e-9)  # fmt: skip
    best = temps[np.argmin(ece if criterion == "ece" else nll)]
    assert float(grid.compute()) == pytest.approx(best)
    assert 0.5 < best < 10.0  # an interior optimum: the test can tell a wrong pick


def test_temperature_grid_arguments():
    assert temperature_values((0.1, 10.0, 0.1)).shape == (100,)
    assert temperature_values((0.1, 10.0, 0.1))[-1].item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match="temperature_grid"):
        temperature_values((0.0, 1.0, 0.1))
    with pytest.raises(ValueError, match="criterion"):
        TemperatureGrid(criterion="brier")
