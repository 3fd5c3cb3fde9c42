"""lightning_calib.checkpointing: atomic saves, checked reads, compatibility checks, run lock."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_calib.checkpointing import (
    AtomicCheckpointIO,
    CheckpointError,
    CheckpointSaveError,
    RunLock,
    RunLockedError,
    check_compatible,
    check_max_epochs,
    check_optimizer_compatible,
    finished_epochs,
    global_rank_from_env,
    install_atomic_checkpoint_io,
    read_checkpoint,
    run_has_checkpoints,
)

REPO = Path(__file__).resolve().parents[1]
SGD = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}


def network(width: int = 4) -> dict:
    return {"class_path": "tiny.Net", "init_args": {"width": width, "depth": 1}}


class Tiny(pl.LightningModule):
    """Hyperparameters shaped like the CLI's: class_path dicts for the network and optimizer."""

    def __init__(
        self, num_classes: int = 3, network: dict | None = None, optimizer: dict | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        width = (network or {}).get("init_args", {}).get("width", 4)
        self.body = nn.Linear(2, width)
        self.head = nn.Linear(width, num_classes)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.body(x)), y)

    def configure_optimizers(self):
        spec = self.hparams.optimizer or SGD
        module, name = spec["class_path"].rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        return cls(self.parameters(), **spec.get("init_args", {}))

    def train_dataloader(self):
        data = TensorDataset(torch.randn(8, 2), torch.randint(0, 3, (8,)))
        return DataLoader(data, batch_size=2)


def make_model(num_classes: int = 3, width: int = 4, optimizer: dict | None = None) -> Tiny:
    return Tiny(num_classes, network(width), optimizer or SGD)


def fit(dirpath: Path, epochs: int = 1, ckpt_path: Path | None = None, extra=(), model=None):
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
        default_root_dir=dirpath,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ModelCheckpoint(dirpath=dirpath, filename="last", enable_version_counter=False),
            *extra,
        ],
    )
    trainer.fit(model or make_model(), ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A 2-epoch fit: ``last.ckpt`` (end of epoch 1) and ``mid.ckpt`` (step 3, inside epoch 1)."""
    folder = tmp_path_factory.mktemp("two_epochs")
    mid = ModelCheckpoint(
        dirpath=folder, filename="mid", every_n_train_steps=3, enable_version_counter=False
    )
    fit(folder, epochs=2, extra=[mid])
    return folder


def fake_checkpoint(n: int = 0, size: int = 1000) -> dict:
    return {"epoch": n, "pytorch-lightning_version": "2.6.6", "state_dict": {"w": torch.ones(size)}}


# ------------------------------------------------------------------------------------ saving
@pytest.fixture
def tmpdir_elsewhere(tmp_path):
    """A ``$TMPDIR`` on another filesystem than ``tmp_path`` where the machine has one
    (``/dev/shm``, a tmpfs), else beside it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(dir=shm))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)
    else:
        folder = tmp_path / "elsewhere"
        folder.mkdir()
        yield folder


def test_save_writes_next_to_target_never_in_tmpdir(tmp_path, monkeypatch, tmpdir_elsewhere):
    elsewhere = tmpdir_elsewhere
    if str(elsewhere).startswith("/dev/shm"):  # the case of the bug: another filesystem
        assert os.stat(elsewhere).st_dev != os.stat(tmp_path).st_dev
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
    assert tempfile.gettempdir() == str(elsewhere)
    moves: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        moves.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    fit(ckpt_dir, epochs=2)

    onto_ckpt = [(s, d) for s, d in moves if d.endswith(".ckpt")]
    assert len(onto_ckpt) == 2  # one atomic rename per epoch
    for src, dst in onto_ckpt:
        assert Path(src).parent == Path(dst).parent == ckpt_dir
        assert Path(src).name == f".last.ckpt.{os.getpid()}.tmp"
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]
    assert read_checkpoint(ckpt_dir / "last.ckpt")["epoch"] == 1


def test_failure_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint(fake_checkpoint(1), target)
    before = target.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(len(before) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(CheckpointSaveError) as info:
        io.save_checkpoint(fake_checkpoint(2), target)
    assert (
        str(info.value) == f"cannot write checkpoint {target}: [Errno 28] No space left on device"
    )
    assert info.value.path == target
    assert isinstance(info.value.__cause__, OSError)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_interrupt_mid_write_removes_temp_and_propagates(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        f.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint(fake_checkpoint(), tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_stops_fit(tmp_path):
    # Root ignores chmod; a *file* where the checkpoint folder's parent should be fails for root.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    ckpt_dir = blocker / "checkpoints"
    with pytest.raises(CheckpointSaveError) as info:
        fit(ckpt_dir, epochs=2)
    assert str(info.value).startswith(f"cannot write checkpoint {ckpt_dir / 'last.ckpt'}: [Errno")
    assert blocker.read_text() == "not a folder"


def test_permission_denied_stops_fit_instead_of_being_swallowed(tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "checkpoints"
    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if str(path).startswith(str(ckpt_dir)) and flags & os.O_WRONLY:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    model = make_model()
    with pytest.raises(CheckpointSaveError) as info:
        fit(ckpt_dir, epochs=3, model=model)
    expected = f"cannot write checkpoint {ckpt_dir / 'last.ckpt'}: [Errno 13] Permission denied"
    assert str(info.value) == expected
    assert model.trainer.current_epoch == 0  # stopped at the first save, not 3 epochs later
    assert list(ckpt_dir.iterdir()) == []


def test_install_replaces_default_io_only():
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)
    assert install_atomic_checkpoint_io(trainer)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)

    class Custom(TorchCheckpointIO):  # a user's own CheckpointIO
        pass

    trainer.strategy.checkpoint_io = Custom()
    assert not install_atomic_checkpoint_io(trainer)
    assert type(trainer.strategy.checkpoint_io) is Custom


def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    code = (
        "import sys, torch\n"
        "from lightning_calib.checkpointing import AtomicCheckpointIO\n"
        "io = AtomicCheckpointIO()\n"
        "for n in range(10000):\n"
        "    ckpt = {'epoch': n, 'pytorch-lightning_version': '2.6.6',\n"
        "            'state_dict': {'w': torch.full((2_000_000,), float(n))}}\n"
        "    io.save_checkpoint(ckpt, sys.argv[1])\n"
        "    print(n, flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(target)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "0"  # one complete checkpoint exists
        tmp = tmp_path / f".last.ckpt.{child.pid}.tmp"
        deadline = time.monotonic() + 60
        while not tmp.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert tmp.exists()
        os.kill(child.pid, signal.SIGKILL)  # while the next checkpoint is being written
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    ckpt = read_checkpoint(target)  # complete: the old one or, if the rename won, the new one
    n = ckpt["epoch"]
    assert bool((ckpt["state_dict"]["w"] == float(n)).all())
    assert run_has_checkpoints(tmp_path) == [target]  # a stale temp file is not a checkpoint


# ----------------------------------------------------------------------------------- reading
def _write(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "not_lightning":
        torch.save({"a": 1}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("empty", "is empty (0 bytes)"),
        ("truncated", "is truncated or corrupt"),
        ("random", "is truncated or corrupt"),
        ("not_lightning", "is not a Lightning checkpoint: it lacks 'epoch', "),
        ("tensor", "is not a Lightning checkpoint: it holds a Tensor"),
    ],
)
def test_read_checkpoint_names_the_path(kind, words, tmp_path, two_epochs):
    path = _write(kind, tmp_path, two_epochs / "last.ckpt")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert words in message
    assert "\n" not in message
    assert info.value.path == path
    if kind in ("truncated", "random"):
        assert info.value.__cause__ is not None


def test_read_checkpoint_loads_a_valid_one(two_epochs):
    ckpt = read_checkpoint(two_epochs / "last.ckpt")
    assert ckpt["epoch"] == 1
    assert ckpt["hyper_parameters"]["network"] == network(4)
    assert ckpt["state_dict"]["head.weight"].device.type == "cpu"


def test_trainer_resume_from_truncated_checkpoint_names_it(tmp_path, two_epochs):
    bad = _write("truncated", tmp_path, two_epochs / "last.ckpt")
    with pytest.raises(CheckpointError, match="is truncated or corrupt") as info:
        fit(tmp_path / "resumed", epochs=3, ckpt_path=bad)
    assert str(bad) in str(info.value)


def test_run_has_checkpoints(tmp_path):
    assert run_has_checkpoints(tmp_path / "nothing") == []
    (tmp_path / "last.ckpt").write_bytes(b"x")
    (tmp_path / "best.ckpt").write_bytes(b"x")
    (tmp_path / "sharded.ckpt").mkdir()
    (tmp_path / ".last.ckpt.123.tmp").write_bytes(b"x")
    (tmp_path / "config.yaml").write_text("a: 1")
    names = [p.name for p in run_has_checkpoints(tmp_path)]
    assert names == ["best.ckpt", "last.ckpt", "sharded.ckpt"]


# ---------------------------------------------------------------------------------- checking
def _state(model: nn.Module) -> dict[str, torch.Size]:
    return {name: value.shape for name, value in model.state_dict().items()}


def test_check_compatible_accepts_the_same_model(two_epochs):
    ckpt = read_checkpoint(two_epochs / "last.ckpt")
    model = make_model()
    check_compatible(ckpt, model.hparams, _state(model))
    check_compatible(ckpt, model.hparams, model.state_dict())  # tensors do as well
    # tuples and lists alike (a YAML round trip turns one into the other)
    ckpt["hyper_parameters"]["network"]["init_args"]["milestones"] = (1, 2)
    hparams = {**model.hparams, "network": network(4)}
    hparams["network"]["init_args"]["milestones"] = [1, 2]
    check_compatible(ckpt, hparams, _state(model))


def test_check_compatible_names_differing_num_classes(two_epochs):
    path = two_epochs / "last.ckpt"
    model = make_model(num_classes=5)
    with pytest.raises(CheckpointError) as info:
        check_compatible(read_checkpoint(path), model.hparams, _state(model), path=path)
    assert str(info.value) == (
        f"checkpoint {path} was trained with num_classes=3; this run has num_classes=5"
    )


def test_check_compatible_names_nested_width_by_dotted_path(two_epochs):
    path = two_epochs / "last.ckpt"
    model = make_model(width=8)
    with pytest.raises(CheckpointError) as info:
        check_compatible(
            read_checkpoint(path), model.hparams, _state(model), path=path, prefix="model."
        )
    assert str(info.value) == (
        f"checkpoint {path} was trained with model.network.init_args.width=4; "
        "this run has model.network.init_args.width=8"
    )


def test_check_compatible_absent_and_ignored_hyperparameters(two_epochs):
    ckpt = read_checkpoint(two_epochs / "last.ckpt")
    model = make_model()
    hparams = {**model.hparams, "dropout": 0.5}
    with pytest.raises(CheckpointError, match="was trained without dropout; this run has"):
        check_compatible(ckpt, hparams, _state(model))
    check_compatible(ckpt, hparams, _state(model), ignore=["dropout"])
    changed_lr = {**model.hparams, "optimizer": {**SGD, "init_args": {"lr": 0.5}}}
    with pytest.raises(CheckpointError, match=r"optimizer\.init_args\.lr=0\.1; this run has"):
        check_compatible(ckpt, changed_lr, _state(model))
    check_compatible(ckpt, changed_lr, _state(model), ignore=["optimizer"])
    check_compatible(ckpt, changed_lr, _state(model), only=["num_classes", "network"])
    wider = make_model(width=8)
    with pytest.raises(CheckpointError, match=r"network\.init_args\.width=4; this run has"):
        check_compatible(ckpt, wider.hparams, _state(wider), only=["num_classes", "network"])


def test_check_compatible_names_first_differing_shape(two_epochs):
    path = two_epochs / "last.ckpt"
    ckpt = read_checkpoint(path)
    other = make_model(width=8)
    same_hparams = make_model().hparams
    with pytest.raises(CheckpointError) as info:
        check_compatible(ckpt, same_hparams, _state(other), path=path)
    assert str(info.value) == (
        f"checkpoint {path} holds body.weight with shape (4, 2); this model has (8, 2)"
    )
    # a checkpoint without hyperparameters is compared by shapes alone
    del ckpt["hyper_parameters"]
    with pytest.raises(CheckpointError, match=r"body\.weight with shape \(4, 2\)"):
        check_compatible(ckpt, other.hparams, _state(other), path=path)


def test_check_compatible_missing_and_unexpected_parameters(two_epochs):
    ckpt = read_checkpoint(two_epochs / "last.ckpt")
    model = make_model()
    state = _state(model)
    extra = {**state, "extra.weight": torch.Size([1])}
    with pytest.raises(CheckpointError, match=r"has no parameter extra\.weight, which this model"):
        check_compatible(ckpt, model.hparams, extra)
    fewer = {k: v for k, v in state.items() if k != "head.bias"}
    with pytest.raises(CheckpointError, match=r"holds parameter head\.bias, which this model does"):
        check_compatible(ckpt, model.hparams, fewer)
    check_compatible(ckpt, model.hparams, extra, strict=False)
    check_compatible(ckpt, model.hparams, fewer, strict=False)


def test_check_optimizer_compatible(two_epochs):
    path = two_epochs / "last.ckpt"
    ckpt = read_checkpoint(path)
    for same in (
        SGD,
        "torch.optim.SGD",
        "torch.optim.sgd.SGD",
        "SGD",
        torch.optim.SGD,
        None,
    ):
        check_optimizer_compatible(ckpt, same)
    with pytest.raises(CheckpointError) as info:
        check_optimizer_compatible(ckpt, {"class_path": "torch.optim.Adam"}, path=path)
    assert str(info.value).startswith(
        f"checkpoint {path} was trained with optimizer torch.optim.SGD; this run uses "
        "torch.optim.Adam: "
    )
    # without the optimizer in the hyperparameters: the saved parameter groups tell
    del ckpt["hyper_parameters"]["optimizer"]
    params = [nn.Parameter(torch.zeros(1))]
    check_optimizer_compatible(ckpt, torch.optim.SGD(params, lr=0.1))
    with pytest.raises(CheckpointError, match="holds the state of another optimizer"):
        check_optimizer_compatible(ckpt, torch.optim.Adam(params), path=path)


@pytest.mark.filterwarnings("ignore:.*exists and is not empty")
@pytest.mark.filterwarnings("ignore:.*callbacks used to create the checkpoint")
@pytest.mark.filterwarnings("ignore:.*The dirpath has changed")
def test_check_max_epochs_with_real_checkpoints(two_epochs, tmp_path):
    last = two_epochs / "last.ckpt"
    ckpt = read_checkpoint(last)
    assert (ckpt["epoch"], finished_epochs(ckpt)) == (1, 2)
    check_max_epochs(ckpt, 3, path=last)  # 2 finished, max 3: one more to train
    check_max_epochs(ckpt, None)
    check_max_epochs(ckpt, -1)
    with pytest.raises(CheckpointError) as info:
        check_max_epochs(ckpt, 2, path=last)
    assert str(info.value).startswith(
        f"checkpoint {last} has already finished 2 epochs and this run has max_epochs=2"
    )
    # written mid-epoch 1 (step 3 of 4): epoch 1 is not finished, so max_epochs=2 proceeds
    mid = read_checkpoint(two_epochs / "mid.ckpt")
    assert (mid["epoch"], mid["global_step"], finished_epochs(mid)) == (1, 3, 1)
    check_max_epochs(mid, 2)

    # resume to 3 really trains epoch 2; after that, max_epochs=3 is refused
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(last, resumed / "last.ckpt")
    check_max_epochs(read_checkpoint(resumed / "last.ckpt"), 3)
    trainer = fit(resumed, epochs=3, ckpt_path=resumed / "last.ckpt")
    assert (trainer.current_epoch, trainer.global_step) == (3, 6)
    after = read_checkpoint(resumed / "last.ckpt")
    assert finished_epochs(after) == 3
    with pytest.raises(CheckpointError, match="already finished 3 epochs"):
        check_max_epochs(after, 3)


# ----------------------------------------------------------------------------------- locking
def test_global_rank_from_env(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("JSM_NAMESPACE_RANK", raising=False)
    assert global_rank_from_env() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process Lightning's DDP launcher started
    assert global_rank_from_env() != 0
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert global_rank_from_env() != 0
    monkeypatch.setenv("RANK", "0")
    assert global_rank_from_env() == 0


def test_run_lock_excludes_a_second_holder_in_process(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir, command="lightning-calib fit -c a.yaml") as lock:
        assert lock.held
        holder = json.loads((run_dir / ".lock").read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunLockedError) as info:
            RunLock(run_dir).acquire()
        message = str(info.value)
        assert message.startswith(f"run folder {run_dir} is in use by pid {os.getpid()} on ")
        assert "running `lightning-calib fit -c a.yaml`" in message
        assert info.value.holder["command"] == "lightning-calib fit -c a.yaml"
    assert not lock.held
    assert (run_dir / ".lock").read_text() == ""
    with RunLock(run_dir):  # free again
        pass


def test_run_lock_live_child_blocks_and_sigkilled_child_does_not(tmp_path):
    run_dir = tmp_path / "run"
    code = (
        "import sys, time\n"
        "from lightning_calib.checkpointing import RunLock\n"
        "lock = RunLock(sys.argv[1], command='holder fit').acquire()\n"
        "time.sleep(300)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        lock_file = run_dir / ".lock"
        deadline = time.monotonic() + 120
        holder: dict = {}
        while time.monotonic() < deadline and child.poll() is None:
            try:
                holder = json.loads(lock_file.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == child.pid:
                break
            time.sleep(0.05)
        assert holder.get("pid") == child.pid, "the child did not take the lock"

        with pytest.raises(RunLockedError) as info:  # a live holder blocks, and is named
            RunLock(run_dir).acquire()
        assert f"run folder {run_dir} is in use by pid {child.pid}" in str(info.value)
        assert "running `holder fit`" in str(info.value)

        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert json.loads(lock_file.read_text())["pid"] == child.pid  # stale contents left
        with RunLock(run_dir, command="next") as lock:  # ...but the lock is free
            assert json.loads(lock_file.read_text())["command"] == "next"
            assert lock.held
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
