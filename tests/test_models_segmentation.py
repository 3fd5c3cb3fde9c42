"""Segmentation networks (models/segmentation.py): offline builds, any-size logits, weights."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
import torchvision
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

import models
from lightning_calib.module import CalibrationModule
from models.segmentation import load_encoder_weights

VOID = 255


@functools.cache
def built(name: str) -> torch.nn.Module:
    """One instance per configuration for the whole file (ResNet-50 builds take ~1 s)."""
    torch.manual_seed(0)
    factories = {
        "deeplabv3_r50": lambda: models.DeepLabV3(21, encoder_name="resnet50"),
        "deeplabv3plus_r50": lambda: models.DeepLabV3Plus(21),
        "small": lambda: models.SmallSegNet(11),
        "deeplabv3plus_r18_d3": lambda: models.DeepLabV3Plus(
            5, encoder_name="resnet18", encoder_depth=3, output_stride=8, decoder_channels=32
        ),
    }
    return factories[name]().eval()


@pytest.mark.parametrize(
    "name, classes",
    [("deeplabv3_r50", 21), ("deeplabv3plus_r50", 21), ("small", 11)],
)
@pytest.mark.parametrize("size", [(64, 64), (37, 53)])
def test_logits_at_the_input_size(name, classes, size):
    net = built(name)
    assert net.num_classes == classes
    with torch.no_grad():
        out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, classes, *size)
    assert torch.isfinite(out).all()


def test_odd_sizes_are_padded_not_resampled():
    """The logits of an odd-sized image are those of the zero-padded image, cropped."""
    net = built("small")
    x = torch.randn(1, 3, 37, 53)
    padded = torch.nn.functional.pad(x, (0, 64 - 53, 0, 48 - 37))
    with torch.no_grad():
        assert torch.equal(net(x), net(padded)[..., :37, :53])
    assert net.size_divisor == 16 and built("deeplabv3_r50").size_divisor == 8


@pytest.mark.parametrize("name", ["small", "deeplabv3plus_r18_d3"])
def test_every_parameter_gets_a_gradient(name):
    """Unused encoder stages are cut, so DDP needs no find_unused_parameters."""
    net = built(name)
    net.train()
    try:
        net(torch.randn(2, 3, 64, 64)).logsumexp(1).mean().backward()
        assert [k for k, p in net.named_parameters() if p.grad is None] == []
        assert all(p.requires_grad for p in net.parameters())
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()
    assert net._pruned  # smp keeps these; they were replaced by nn.Identity


def test_the_construction_probe_leaves_batchnorm_statistics_alone():
    net = models.SmallSegNet(11)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(int(m.num_batches_tracked) == 0 for m in bns)
    assert all(p.grad is None for p in net.parameters())


def test_sync_batchnorm_keeps_timm_activations():
    """torch's conversion drops BatchNormAct2d's activation: refused; the plugin keeps it."""
    x = torch.randn(2, 3, 32, 32)
    net = models.SmallSegNet(11).eval()
    with torch.no_grad():
        expected = net(x)
    plugin = models.TimmSyncBatchNorm()
    synced = plugin.apply(net)
    assert any(type(m).__name__ == "SyncBatchNormAct" for m in synced.modules())
    with torch.no_grad():
        assert torch.equal(synced(x), expected)
        reverted = plugin.revert(synced).eval()  # Lightning's revert makes BNs in train mode
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in reverted.modules())
        assert torch.equal(reverted(x), expected)
    plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(models.SmallSegNet(11))
    with pytest.raises(RuntimeError, match="TimmSyncBatchNorm"):
        plain(x)
    pl.Trainer(accelerator="cpu", plugins=[plugin], sync_batchnorm=True, logger=False)


@pytest.mark.parametrize("weights", ["imagenet", "ssl", "weights.npz"])
def test_named_weights_are_refused(weights):
    with pytest.raises(ValueError, match="nothing is downloaded") as err:
        models.DeepLabV3(21, encoder_weights=weights)
    assert "local path" in str(err.value) and ".safetensors" in str(err.value)
    if weights == "imagenet":
        assert "smp-hub/resnet50.imagenet" in str(err.value)


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        models.SmallSegNet(11, encoder_weights=str(path))


@pytest.mark.parametrize("layout", ["encoder.pth", "model.pt", "checkpoint.ckpt.pt", "safetensors"])
def test_local_weights_round_trip(tmp_path, layout):
    torch.manual_seed(1)
    source = models.SmallSegNet(11)
    state = source.encoder.state_dict()
    if layout == "model.pt":  # a whole smp model's state dict: the encoder.* part is used
        state = source.state_dict()
    elif layout == "checkpoint.ckpt.pt":  # a Lightning checkpoint of CalibrationModule
        state = {"state_dict": {f"network.{k}": v for k, v in source.state_dict().items()}}
    if layout == "safetensors":
        path = tmp_path / "encoder.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / layout
        torch.save(state, path)
    torch.manual_seed(2)
    loaded = models.SmallSegNet(11, encoder_weights=str(path))
    theirs = source.encoder.state_dict()
    ours = loaded.encoder.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # only the encoder is loaded: the decoder keeps its own (other seed) initialisation
    assert not torch.equal(loaded.segmentation_head[0].weight, source.segmentation_head[0].weight)


def test_torchvision_resnet_file_fits_a_shallow_smp_resnet_encoder(tmp_path):
    """fc.* and the stages encoder_depth=3 leaves out are skipped; the rest must fit."""
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-tv.pth"
    torch.save(tv.state_dict(), path)
    net = models.DeepLabV3Plus(
        5, encoder_name="resnet18", encoder_depth=3, output_stride=8, encoder_weights=str(path)
    )
    assert torch.equal(net.encoder.conv1.weight, tv.conv1.weight)
    assert torch.equal(net.encoder.layer2[1].bn2.running_var, tv.layer2[1].bn2.running_var)


def test_wrong_weights_file_is_refused_by_name(tmp_path):
    path = tmp_path / "mobilenet-encoder.pth"
    torch.save(built("small").encoder.state_dict(), path)
    with pytest.raises(ValueError, match=r"mobilenet-encoder\.pth.*does not fit the resnet18"):
        models.DeepLabV3Plus(5, encoder_name="resnet18", encoder_weights=str(path))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match=r"cannot read encoder weights file .*garbage\.pt"):
        load_encoder_weights(built("small"), garbage)


def test_arguments_the_module_sets_are_refused():
    with pytest.raises(ValueError, match="expects logits"):
        models.SmallSegNet(11, activation="softmax2d")
    with pytest.raises(ValueError, match="num_classes"):
        models.DeepLabV3(21, classes=3)


def test_calibration_module_forward_and_metrics():
    net = functools.partial(models.SmallSegNet, decoder_channels=32)
    module = CalibrationModule(
        network=net, num_classes=11, metrics="segmentation", ignore_index=VOID
    )
    module.eval()
    x = torch.randn(2, 3, 37, 53)
    y = torch.randint(0, 11, (2, 37, 53))
    y[:, :5] = VOID
    with torch.no_grad():
        logits = module(x)
    assert logits.shape == (2, 11, 37, 53)
    module._check_logits(logits, y)
    module.val_metrics.update(logits, y)
    values = module.val_metrics.compute()
    assert 0.0 <= float(values["val/miou"]) <= 1.0
    with pytest.raises(ValueError, match="built for num_classes=21"):
        CalibrationModule(network=built("deeplabv3_r50"), num_classes=11)


def test_yaml_class_path_with_smp_arguments():
    from pytorch_lightning.cli import LightningArgumentParser

    parser = LightningArgumentParser()
    parser.add_class_arguments(CalibrationModule, "model", fail_untyped=False)
    network = {
        "class_path": "models.DeepLabV3",
        "init_args": {"encoder_name": "resnet18", "decoder_channels": 32},
    }
    config = parser.parse_object(
        {"model": {"network": network, "num_classes": 11, "metrics": "segmentation"}}
    )
    module = parser.instantiate(config).model
    assert isinstance(module.network, models.DeepLabV3)
    assert module.network.segmentation_head[0].in_channels == 32


def test_fit_and_validate_on_random_canvases(tmp_path):
    """Two training and one validation step through Lightning: dense logits end to end."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 64, 64, generator=gen)
    y = torch.randint(0, 11, (8, 64, 64), generator=gen)
    y[torch.rand(y.shape, generator=gen) < 0.1] = VOID
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    module = CalibrationModule(
        network=models.SmallSegNet, num_classes=11, metrics="segmentation", ignore_index=VOID
    )
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, loader, loader)
    assert "val/miou" in module.epoch_metrics and "val/temperature" in module.epoch_metrics
