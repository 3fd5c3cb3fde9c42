"""Classification datamodules at paper scale, on tiny fake datasets in the official formats.

Covers CIFAR-10/100, Tiny-ImageNet and ImageNet: layouts and root resolution, split sizes
and their determinism, label mapping, decoding, normalization, augmentation-free
evaluation, error messages, the committed ImageNet split, the ImageNet network, a
``fast_dev_run`` fit per datamodule and the 27 shipped recipe configs.
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO
from fake_datasets import (
    TINY_WNIDS,
    class_colour,
    make_fake_cifar10,
    make_fake_cifar100,
    make_fake_imagenet,
    make_fake_tiny_imagenet,
)
from torch import nn

import models
from datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    ImageNetDataModule,
    TinyImageNetDataModule,
)
from datamodules.cifar import read_cifar_batch
from datamodules.splits import (
    IMAGENET_SPLIT_FILE,
    imagenet_val_names,
    read_name_list,
    stratified_split,
)
from datamodules.splits.make_imagenet_split import split_text
from datamodules.transforms import DatasetNotFoundError

LOSSES = ("ce", "ls", "focal", "flsd", "ecp", "mmce", "mbls", "cpc", "acls")
DATASETS = ("cifar10", "tiny_imagenet", "imagenet")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding every fake dataset (read-only for the tests that share it)."""
    root = tmp_path_factory.mktemp("data")
    make_fake_cifar10(root)
    make_fake_cifar100(root)
    make_fake_tiny_imagenet(root)
    make_fake_imagenet(root)
    return root


@pytest.fixture(scope="module")
def const_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake CIFAR-10 whose every pixel is 128."""
    return make_fake_cifar10(tmp_path_factory.mktemp("const"), value=128)


def _setup(dm: pl.LightningDataModule) -> pl.LightningDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _expected_norm(value: float | tuple, dm_cls: type) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32).expand(3)
    return (value / 255.0 - torch.tensor(dm_cls.mean)) / torch.tensor(dm_cls.std)


# ------------------------------------------------------------------------ split logic
def test_stratified_split_exact_on_recipe_sizes() -> None:
    cifar = np.repeat(np.arange(10), 5000)
    train, val = stratified_split(cifar, 0.1, seed=0)
    assert (len(train), len(val)) == (45_000, 5_000)
    assert np.bincount(cifar[val]).tolist() == [500] * 10
    tiny = np.repeat(np.arange(200), 500)
    train, val = stratified_split(tiny, 0.1, seed=0)
    assert (len(train), len(val)) == (90_000, 10_000)
    assert set(np.bincount(tiny[val]).tolist()) == {50}
    assert np.intersect1d(train, val).size == 0


def test_stratified_split_fixed_indices_tiny_sizes() -> None:
    # The fake CIFAR-10 label sequence; these indices must never change.
    labels = [i % 10 for i in range(20)] * 5
    assert stratified_split(labels, 0.1, 0)[1].tolist() == [7, 15, 19, 20, 22, 31, 36, 54, 63, 78]
    assert stratified_split(labels, 0.1, 1)[1].tolist() == [20, 23, 25, 47, 64, 68, 69, 76, 82, 91]
    imbalanced = [0] * 7 + [1] * 5 + [2] * 3
    assert stratified_split(imbalanced, 0.2, 0)[1].tolist() == [6, 8, 13]  # fraction
    assert stratified_split(imbalanced, 4, 0)[1].tolist() == [2, 6, 8, 13]  # count
    assert stratified_split(imbalanced, 0.5, 0)[1].tolist() == [1, 2, 3, 6, 8, 10, 11, 13]


@pytest.mark.parametrize("val_split", [0.0, 0.01, 0.99, 20, 100])
def test_stratified_split_rejects_empty_sides(val_split: float) -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        stratified_split([0, 1] * 10, val_split, 0)


def test_imagenet_split_file_is_committed_and_regenerable() -> None:
    assert IMAGENET_SPLIT_FILE.stat().st_size < 1_000_000
    assert IMAGENET_SPLIT_FILE.read_text() == split_text(seed=0)
    names = read_name_list(IMAGENET_SPLIT_FILE)
    assert len(names) == len(set(names)) == 10_000
    assert names == sorted(names)
    numbers = [int(n[len("ILSVRC2012_val_") : -len(".JPEG")]) for n in names]
    assert 1 <= min(numbers) and max(numbers) <= 50_000
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    assert digest == hashlib.sha256("\n".join(imagenet_val_names(0)).encode()).hexdigest()
    assert names[:3] == [
        "ILSVRC2012_val_00000002.JPEG",
        "ILSVRC2012_val_00000004.JPEG",
        "ILSVRC2012_val_00000007.JPEG",
    ]


# ------------------------------------------------------------------------------ CIFAR
def test_cifar10_splits_shapes_and_labels(data_root: Path) -> None:
    dm = _setup(CIFAR10DataModule(data_root, batch_size=8, num_workers=0))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (90, 10, 20)
    assert sorted(dm.val_set.targets) == list(range(10))  # one per class
    assert dm.test_set.targets == [i % 10 for i in range(20)]
    assert dm.class_names[:2] == ["airplane", "automobile"]
    x, y = dm.train_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 3, 32, 32) and yb.shape == (8,)
    # Official layout: each row is the R plane, then G, then B (row-major 32x32).
    raw = read_cifar_batch(data_root / "cifar-10-batches-py" / "test_batch")["data"]
    assert torch.equal(dm.test_set.images[3], torch.from_numpy(raw[3].reshape(3, 32, 32)))


def test_cifar10_split_is_deterministic_and_seeded(data_root: Path) -> None:
    folder = data_root / "cifar-10-batches-py"
    raw = np.concatenate(
        [read_cifar_batch(folder / f"data_batch_{b}")["data"] for b in range(1, 6)]
    ).reshape(-1, 3, 32, 32)
    expected = [7, 15, 19, 20, 22, 31, 36, 54, 63, 78]
    a = _setup(CIFAR10DataModule(data_root, num_workers=0, split_seed=0))
    b = _setup(CIFAR10DataModule(folder, num_workers=0, split_seed=0))  # folder itself
    assert torch.equal(a.val_set.images, torch.from_numpy(raw[expected]))
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert torch.equal(a.train_set.images, b.train_set.images)
    c = _setup(CIFAR10DataModule(data_root, num_workers=0, split_seed=1))
    assert not torch.equal(a.val_set.images, c.val_set.images)


def test_cifar_normalization_and_augmentation_free_eval(const_cifar: Path) -> None:
    dm = _setup(CIFAR10DataModule(const_cifar, num_workers=0))
    want = _expected_norm(128, CIFAR10DataModule).view(3, 1, 1).expand(3, 32, 32)
    for ds in (dm.val_set, dm.test_set):
        x, _ = ds[0]
        torch.testing.assert_close(x, want, rtol=0, atol=1e-5)
    # Train: padded crops of a constant image show the zero padding somewhere.
    torch.manual_seed(0)
    padded = [dm.train_set[0][0] for _ in range(20)]
    assert any(not torch.allclose(x, want) for x in padded)


def test_eval_is_deterministic_train_is_augmented(data_root: Path) -> None:
    dm = _setup(CIFAR10DataModule(data_root, num_workers=0))
    torch.manual_seed(0)
    assert torch.equal(dm.val_set[2][0], dm.val_set[2][0])
    draws = [dm.train_set[2][0] for _ in range(10)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_cifar100_fine_labels(data_root: Path) -> None:
    dm = _setup(CIFAR100DataModule(data_root / "cifar-100-python", num_workers=0))
    assert CIFAR100DataModule.num_classes == 100
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (180, 20, 40)
    assert dm.test_set.targets == [(7 * i) % 100 for i in range(40)]
    assert dm.class_names[:2] == ["fine_0", "fine_1"]
    assert dm.train_set[0][0].shape == (3, 32, 32)


# ---------------------------------------------------------------------- Tiny-ImageNet
def test_tiny_imagenet_splits_and_label_order(data_root: Path) -> None:
    dm = _setup(TinyImageNetDataModule(data_root, num_workers=0, batch_size=4))
    assert dm.class_names == sorted(TINY_WNIDS)  # label = index in sorted wnids.txt
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (36, 4, 12)
    assert sorted(dm.val_set.targets) == [0, 1, 2, 3]  # 10% of each class's 10
    for ds in (dm.val_set, dm.test_set):  # decoded colour tells the class
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 64, 64)
            want = _expected_norm(class_colour(y), TinyImageNetDataModule)
            torch.testing.assert_close(x.mean((1, 2)), want, rtol=0, atol=0.05)
    for path, label in dm.test_set.samples:  # annotations mapped through sorted wnids
        assert label == sorted(TINY_WNIDS).index(_tiny_val_wnid(data_root, Path(path).name))
    xb, _ = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 3, 64, 64)


def _tiny_val_wnid(root: Path, name: str) -> str:
    ann = root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    return dict(line.split("\t")[:2] for line in ann.read_text().splitlines())[name]


def test_tiny_imagenet_split_deterministic_and_greyscale(data_root: Path) -> None:
    folder = data_root / "tiny-imagenet-200"
    a = _setup(TinyImageNetDataModule(data_root, num_workers=0, val_split=0.2))
    b = _setup(TinyImageNetDataModule(folder, num_workers=0, val_split=0.2))
    names = [Path(p).name for p, _ in a.val_set.samples]
    assert names == [Path(p).name for p, _ in b.val_set.samples]
    assert names == [
        "n01000000_2.JPEG", "n01000000_8.JPEG", "n02000000_3.JPEG", "n02000000_5.JPEG",
        "n03000000_2.JPEG", "n03000000_3.JPEG", "n04000000_1.JPEG", "n04000000_6.JPEG",
    ]  # fmt: skip
    grey = next(i for i, (p, _) in enumerate(a.train_set.samples) if p.endswith("n03000000_0.JPEG"))
    assert a.train_set[grey][0].shape == (3, 64, 64)


# --------------------------------------------------------------------------- ImageNet
def test_imagenet_splits_by_committed_list(data_root: Path) -> None:
    dm = _setup(ImageNetDataModule(data_root, num_workers=0, batch_size=2))  # parent root
    listed = set(read_name_list(IMAGENET_SPLIT_FILE))
    assert dm.class_names == ["n00000001", "n00000002", "n00000003"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 6, 6)
    assert all(Path(p).name in listed for p, _ in dm.val_set.samples)
    assert not any(Path(p).name in listed for p, _ in dm.test_set.samples)
    assert sorted(dm.val_set.targets) == [0, 0, 1, 1, 2, 2]
    x, y = dm.val_set[0]
    assert x.shape == (3, 224, 224)
    want = _expected_norm(class_colour(y), ImageNetDataModule)
    torch.testing.assert_close(x.mean((1, 2)), want, rtol=0, atol=0.05)
    assert torch.equal(dm.val_set[1][0], dm.val_set[1][0])
    assert dm.train_set[0][0].shape == (3, 224, 224)
    again = _setup(ImageNetDataModule(data_root / "imagenet", num_workers=0))
    assert again.val_set.samples == dm.val_set.samples


def test_imagenet_custom_split_file(data_root: Path, tmp_path: Path) -> None:
    val_names = sorted(p.name for p in (data_root / "imagenet" / "val").rglob("*.JPEG"))
    custom = tmp_path / "split.txt"
    custom.write_text("# my split\n" + val_names[0] + "\n")
    dm = _setup(ImageNetDataModule(data_root, num_workers=0, val_split_file=str(custom)))
    assert [Path(p).name for p, _ in dm.val_set.samples] == [val_names[0]]
    custom.write_text("ILSVRC2012_val_99999999.JPEG\n")
    with pytest.raises(ValueError, match="left 0 for validation"):
        _setup(ImageNetDataModule(data_root, num_workers=0, val_split_file=str(custom)))


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("cls", "folder", "layout_hint", "source_hint"),
    [
        (CIFAR10DataModule, "cifar-10-batches-py", "data_batch_1", "cifar-10-python.tar.gz"),
        (CIFAR100DataModule, "cifar-100-python", "meta", "cifar-100-python.tar.gz"),
        (TinyImageNetDataModule, "tiny-imagenet-200", "val_annotations.txt", "cs231n"),
        (ImageNetDataModule, "imagenet", "train/<wnid>/*.JPEG", "image-net.org"),
    ],
)
def test_missing_dataset_message(
    tmp_path: Path, cls: type, folder: str, layout_hint: str, source_hint: str
) -> None:
    missing = tmp_path / "nowhere"
    dm = cls(str(missing), num_workers=0)  # instantiating never touches the disk
    with pytest.raises(DatasetNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert folder in msg and source_hint in msg and layout_hint in msg
    with pytest.raises(DatasetNotFoundError):
        dm.setup("fit")


def test_incomplete_cifar_names_missing_file(tmp_path: Path) -> None:
    folder = make_fake_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_3") as err:
        CIFAR10DataModule(tmp_path, num_workers=0).prepare_data()
    assert str(folder) in str(err.value)


def test_corrupt_cifar_batch_names_file(tmp_path: Path) -> None:
    folder = make_fake_cifar10(tmp_path)
    (folder / "data_batch_2").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_2"):
        _setup(CIFAR10DataModule(folder, num_workers=0))


def test_cifar_batch_with_wrong_shape_or_code_is_refused(tmp_path: Path) -> None:
    folder = make_fake_cifar10(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((4, 10), np.uint8), "labels": [0] * 4}, f)
    with pytest.raises(ValueError, match=r"test_batch.*\(N, 3072\)"):
        _setup(CIFAR10DataModule(folder, num_workers=0))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Path("/")}, f)  # any non-numpy global is refused
    with pytest.raises(ValueError, match=r"test_batch.*refusing"):
        read_cifar_batch(folder / "test_batch")


def test_corrupt_image_names_file(tmp_path: Path) -> None:
    folder = make_fake_tiny_imagenet(tmp_path)
    bad = folder / "val" / "images" / "val_5.JPEG"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    dm = _setup(TinyImageNetDataModule(folder, num_workers=0))
    i = next(i for i, (p, _) in enumerate(dm.test_set.samples) if p == str(bad))
    with pytest.raises(RuntimeError, match=r"val_5\.JPEG"):
        dm.test_set[i]


def test_malformed_tiny_imagenet_annotations(tmp_path: Path) -> None:
    folder = make_fake_tiny_imagenet(tmp_path)
    ann = folder / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_99.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt, line 13"):
        _setup(TinyImageNetDataModule(folder, num_workers=0))


def test_tiny_imagenet_missing_class_folder(tmp_path: Path) -> None:
    folder = make_fake_tiny_imagenet(tmp_path)
    (folder / "wnids.txt").write_text("\n".join([*TINY_WNIDS, "n05000000"]) + "\n")
    with pytest.raises(ValueError, match=r"n05000000/images is missing"):
        _setup(TinyImageNetDataModule(folder, num_workers=0))


def test_imagenet_flat_val_folder_is_refused(tmp_path: Path) -> None:
    folder = make_fake_imagenet(tmp_path, n_classes=2, train_per_class=1, val_per_class=2)
    for img in list((folder / "val").rglob("*.JPEG")):
        img.rename(folder / "val" / img.name)
    for d in (folder / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    with pytest.raises(ValueError, match="holds images directly"):
        _setup(ImageNetDataModule(folder, num_workers=0))


# ----------------------------------------------------------------------------- models
def test_every_network_takes_num_classes_first() -> None:
    for cls in (models.ResNet, models.TorchvisionResNet):
        assert next(iter(inspect.signature(cls).parameters)) == "num_classes", cls


def test_torchvision_resnet_local_weights_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weights_path"):
        models.TorchvisionResNet(10, depth=18, weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        models.TorchvisionResNet(10, depth=18, weights_path=str(tmp_path / "nope.pth"))
    src = models.TorchvisionResNet(1000, depth=18)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    net = models.TorchvisionResNet(7, depth=18, weights="IMAGENET1K_V1", weights_path=str(path))
    assert torch.equal(net.conv1.weight, src.conv1.weight)
    assert net.fc.out_features == 7  # classifier of another size is skipped
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises((ValueError, RuntimeError)):
        models.TorchvisionResNet(7, depth=18, weights_path=str(path))


# ------------------------------------------------------------------- fast_dev_run fits
def _tiny_fit(dm: pl.LightningDataModule, stem: str = "cifar") -> None:
    from lightning_calib.module import CalibrationModule

    module = CalibrationModule(
        network=lambda k: models.ResNet(k, depth=8, width=4, stem=stem),
        num_classes=dm.num_classes,
        loss=nn.CrossEntropyLoss(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01),
    )
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: CIFAR10DataModule(r, batch_size=4, num_workers=0),
        lambda r: CIFAR100DataModule(r, batch_size=4, num_workers=0),
        lambda r: TinyImageNetDataModule(r, batch_size=4, num_workers=0),
        lambda r: ImageNetDataModule(r, batch_size=2, num_workers=0, crop_size=32, resize_size=36),
    ],
    ids=["cifar10", "cifar100", "tiny_imagenet", "imagenet"],
)
def test_fast_dev_run_fit(data_root: Path, make) -> None:
    dm = make(data_root)
    _tiny_fit(dm, stem="imagenet" if isinstance(dm, ImageNetDataModule) else "cifar")


# --------------------------------------------------------------------- shipped configs
RECIPES = {
    "cifar10": dict(
        data=CIFAR10DataModule, batch=128, epochs=350, net=models.ResNet, depth=50,
        net_args={"stem": "cifar", "pool_size": 1}, opt=torch.optim.SGD,
        opt_args={"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
        sched="MultiStepLR", sched_args={"milestones": {150: 1, 250: 1}, "gamma": 0.1},
    ),
    "tiny_imagenet": dict(
        data=TinyImageNetDataModule, batch=64, epochs=100, net=models.ResNet, depth=50,
        net_args={"stem": "cifar", "pool_size": 2}, opt=torch.optim.SGD,
        opt_args={"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
        sched="MultiStepLR", sched_args={"milestones": {40: 1, 60: 1}, "gamma": 0.1},
    ),
    "imagenet": dict(
        data=ImageNetDataModule, batch=64, epochs=200, net=models.TorchvisionResNet, depth=50,
        net_args={}, opt=torch.optim.AdamW, opt_args={"lr": 5e-4, "weight_decay": 0.05},
        sched="WarmupCosineLR",
        sched_args={"warmup_epochs": 1, "max_epochs": 200, "eta_min": 0.0},
    ),
}  # fmt: skip
LOSS_CLASSES = {
    "ce": "CrossEntropy", "ls": "LabelSmoothing", "focal": "FocalLoss", "flsd": "FLSD",
    "ecp": "EntropyPenalty", "mmce": "MMCE", "mbls": "MbLS", "cpc": "CPC", "acls": "ACLS",
}  # fmt: skip


def test_config_files_are_complete() -> None:
    for ds in DATASETS:
        found = sorted(p.stem for p in (REPO / "configs" / ds).glob("*.yaml"))
        assert found == sorted(["_base", *LOSSES])


@pytest.mark.filterwarnings("ignore:.*AMP with fp16 is not supported on CPU")
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_recipe_config_instantiates(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, loss: str
) -> None:
    from lightning_calib.cli import main

    monkeypatch.setattr("sys.argv", ["lightning-calib"])  # pytest's own argv is not ours

    recipe = RECIPES[dataset]
    cli = main(
        [
            "--config", str(REPO / "configs" / dataset / f"{loss}.yaml"),
            f"--data.init_args.root={data_root}",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )  # fmt: skip
    config = cli.config
    assert config["trainer"]["default_root_dir"] == str(tmp_path)
    original = (REPO / "configs" / dataset / f"{loss}.yaml").read_text()
    assert f"default_root_dir: runs/{dataset}/{loss}" in original
    trainer, dm, model = cli.trainer, cli.datamodule, cli.model
    assert type(dm) is recipe["data"] and dm.batch_size == recipe["batch"]
    assert trainer.max_epochs == recipe["epochs"]
    assert trainer.gradient_clip_val == 2.0 and trainer.gradient_clip_algorithm == "norm"
    assert type(model.network) is recipe["net"]
    assert model.num_classes == recipe["data"].num_classes == model.network.fc.out_features
    net_args = config["model"]["network"]["init_args"]
    assert net_args["depth"] == recipe["depth"]
    assert {k: net_args[k] for k in recipe["net_args"]} == recipe["net_args"]
    assert type(model.loss).__name__ == LOSS_CLASSES[loss]
    assert model.scheduler_interval == "epoch"
    opt_conf = model.configure_optimizers()
    opt, sched = opt_conf["optimizer"], opt_conf["lr_scheduler"]["scheduler"]
    assert type(opt) is recipe["opt"]
    for key, value in recipe["opt_args"].items():
        assert opt.defaults[key] == pytest.approx(value), key
    assert type(sched).__name__ == recipe["sched"]
    for key, value in recipe["sched_args"].items():
        assert getattr(sched, key) == value, key
    ckpt = next(cb for cb in trainer.callbacks if type(cb).__name__ == "ModelCheckpoint")
    assert (ckpt.monitor, ckpt.mode) == ("val/acc", "max")
    if dataset == "imagenet":
        assert config["trainer"]["strategy"] == "ddp"
        assert config["trainer"]["sync_batchnorm"] is True
        assert config["trainer"]["precision"] == "16-mixed"
    else:
        assert config["trainer"]["precision"] == "32-true"
