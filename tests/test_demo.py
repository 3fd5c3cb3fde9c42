"""The digits demo (progress lines, quiet output, reliability image) and the CIFAR-100 configs."""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO

from lightning_calib import demo
from lightning_calib.cli import main as cli_main
from lightning_calib.config import compose

LOSSES = ("ce", "acls")
# Overrides that make a digits run take a second or two (as conftest.tiny_trainer_args; the
# demo sets the run folders itself).
TINY = [
    "--max-epochs", "1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.log_every_n_steps=1",  # else Lightning warns (rightly) about 2 batches < 5
    "--model.network.init_args.width=4",
]  # fmt: skip
NOISE = (
    "litlogger",
    "litmodels",
    "Tip:",
    "multiple `ModelCheckpoint`",
    "GPU available",
    "TPU available",
    "Seed set",
    "Restoring states",
    "Loaded model weights",
    "`Trainer.fit` stopped",
    "LeafSpec",
    "exists and is not empty",
)
PROGRESS = re.compile(
    r"^\[(?P<i>\d+)/(?P<n>\d+)\] (?P<loss>\w+) +epoch 1/1  val/acc \d\.\d{3}  "
    r"test/acc \d\.\d{3}  \d+\.\d s$"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _progress_lines(out: str) -> list[re.Match]:
    return [m for line in out.splitlines() if (m := PROGRESS.match(line))]


def _check_table(out: str) -> None:
    head = demo.format_table({}).splitlines()[0]
    lines = out.splitlines()
    assert head in lines
    rows = [line for line in lines if line.startswith("| ") and line != head]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(LOSSES)
    assert all(row.count("|") == len(demo.COLUMNS) + 2 for row in rows)
    assert "float rounding" in out


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300
    assert len(data) > 10_000  # bars, text and lines, not a blank canvas


def _lightning_levels() -> dict[str, int]:
    return {name: logging.getLogger(name).level for name in demo.LIGHTNING_LOGGERS}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_demo_in_process_progress_table_image_and_restored_state(tmp_path, capsys):
    levels, filters = _lightning_levels(), list(warnings.filters)
    handler = _Records()
    watched = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric")]
    for lg in watched:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # anything not filtered by the demo is recorded
            demo.main(["--tasks", "digits", "--losses", *LOSSES, "--out", str(tmp_path), *TINY])
            assert warnings.filters[0] == ("always", None, Warning, None, 0)
    finally:
        for lg in watched:
            lg.removeHandler(handler)
    out = capsys.readouterr().out

    # one final progress line per loss, in order, and no carriage returns (not a TTY)
    found = _progress_lines(out)
    assert [(m["i"], m["n"], m["loss"]) for m in found] == [("1", "2", "ce"), ("2", "2", "acls")]
    assert "\r" not in out
    _check_table(out)
    image = tmp_path / "digits" / "reliability.png"
    assert f"reliability diagrams in {image}" in out
    assert re.search(r"^2 runs in \d+ s$", out.splitlines()[-1])
    _check_png(image)
    assert {"summary.md", "summary.json"} <= {p.name for p in (tmp_path / "digits").iterdir()}

    # Lightning's INFO lines were never emitted, the known warnings never shown
    assert [r.getMessage() for r in handler.records if r.levelno < logging.WARNING] == []
    shown = [str(w.message) for w in caught]
    assert not [m for m in shown if any(noise in m for noise in NOISE)], shown
    # and everything is as it was
    assert _lightning_levels() == levels
    assert list(warnings.filters) == filters


def test_demo_as_a_command_prints_no_framework_noise(tmp_path):
    """The whole output (stdout and stderr, as a user sees it), without the Makefile's env."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MPLBACKEND")}
    args = ["--tasks", "digits", "--losses", *LOSSES, "--out", str(tmp_path), *TINY]
    cmd = [sys.executable, "-m", "lightning_calib.demo", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert not [noise for noise in NOISE if noise in both], both
    assert done.stderr == ""
    assert len(_progress_lines(done.stdout)) == len(LOSSES)
    assert "\r" not in done.stdout
    _check_table(done.stdout)
    _check_png(tmp_path / "digits" / "reliability.png")

    # a rerun into the same folder is as quiet (its checkpoint folders exist now)
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert rerun.returncode == 0 and rerun.stderr == "", rerun.stderr


def test_quiet_lightning_silences_only_the_known_messages_and_restores():
    from pytorch_lightning.utilities.rank_zero import rank_zero_warn

    info = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    levels, filters = _lightning_levels(), list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with demo.quiet_lightning():
            assert not info.isEnabledFor(logging.INFO)
            assert info.isEnabledFor(logging.WARNING)  # real problems still show
            rank_zero_warn(
                '`.test(ckpt_path="best")` is called with Trainer configured with multiple '
                "`ModelCheckpoint` callbacks. It will use the best checkpoint path from first "
                "checkpoint callback."
            )
            warnings.warn(
                "`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1
            )
            warnings.warn("something else is wrong", UserWarning, stacklevel=1)
        with pytest.raises(RuntimeError, match="boom"), demo.quiet_lightning():
            raise RuntimeError("boom")  # exceptions go through, and the state is restored
    assert [str(w.message) for w in caught] == ["something else is wrong"]
    assert _lightning_levels() == levels
    assert list(warnings.filters) == filters


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_progress_rewrites_one_line_on_a_terminal_and_writes_once_otherwise():
    tty, pipe = _Terminal(), io.StringIO()
    bars = [demo.RunProgress("focal", 3, 9, width=6, stream=s, interval=0.0) for s in (tty, pipe)]
    for bar in bars:
        bar.max_epochs = 30
        for epoch in (1, 2, 3):
            bar.epoch, bar.val_acc = epoch, 0.5 + epoch / 10
            bar.draw()
        bar.close("test/acc 0.812")
        bar.close("again")  # closing twice writes nothing more
    final = r"\[3/9\] focal   epoch 3/30  val/acc 0\.800  test/acc 0\.812  \d+\.\d s"
    assert re.fullmatch(final + r" *\n", pipe.getvalue())
    screen = tty.getvalue()
    assert screen.count("\r") == 4 and screen.count("\n") == 1 and screen.endswith("\n")
    assert re.fullmatch(final + r" *", screen.split("\r")[-1].rstrip("\n"))


def test_public_helpers_keep_their_signatures():
    import inspect

    assert demo.DEFAULT_LOSSES == (
        "ce",
        "ls",
        "focal",
        "flsd",
        "ecp",
        "mmce",
        "mbls",
        "cpc",
        "acls",
    )
    params = list(inspect.signature(demo.run_demo).parameters)
    assert params[:3] == ["losses", "out", "extra"]
    assert list(inspect.signature(demo.train_and_test).parameters)[:3] == ["config", "out", "extra"]
    assert demo.format_table({"ce": {"acc": 0.5, "temperature": 1.5}}).splitlines()[2] == (
        "| ce | 50.00 | - | - | - | - | - | - | - | 1.50 |"
    )


def test_demo_rejects_an_unknown_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--losses", "ce", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --epochs" in capsys.readouterr().err


# --- CIFAR-100 ------------------------------------------------------------------------------------

CIFAR10 = {p.stem: p for p in (CONFIGS / "cifar10").glob("*.yaml") if not p.stem.startswith("_")}
CIFAR100 = {p.stem: p for p in (CONFIGS / "cifar100").glob("*.yaml") if not p.stem.startswith("_")}


def test_cifar100_has_the_losses_of_cifar10():
    assert set(CIFAR100) == set(CIFAR10) == set(demo.DEFAULT_LOSSES)


@pytest.mark.parametrize("loss", sorted(CIFAR100))
def test_cifar100_config_composes_and_instantiates(loss, tmp_path):
    path = CIFAR100[loss]
    cfg, ref = compose(path), compose(CIFAR10[loss])
    assert cfg["data"]["class_path"] == "datamodules.CIFAR100DataModule"
    assert cfg["data"]["init_args"]["root"] == "data/cifar-100-python"
    assert cfg["trainer"]["default_root_dir"] == f"runs/cifar100/{loss}"
    assert "logger" not in cfg["trainer"]  # the CLI logs into default_root_dir
    assert cfg["model"]["loss"] == ref["model"]["loss"]  # the same loss hyperparameters
    # the same recipe: only the dataset and the run folders differ
    trainer, ref_trainer = dict(cfg["trainer"]), dict(ref["trainer"])
    for t in (trainer, ref_trainer):
        t.pop("default_root_dir")
    assert trainer == ref_trainer
    data, ref_data = dict(cfg["data"]["init_args"]), dict(ref["data"]["init_args"])
    data.pop("root"), ref_data.pop("root")
    assert data == ref_data
    assert cfg["model"] == ref["model"]
    assert cfg["checkpoint"] == ref["checkpoint"]

    root = [f"--trainer.default_root_dir={tmp_path}"]
    cli = cli_main(["--config", str(path), *root], run=False)  # no data is read before setup
    assert type(cli.datamodule).__name__ == "CIFAR100DataModule"
    assert cli.model.num_classes == cli.datamodule.num_classes == 100
    assert cli.model.network.fc.out_features == 100
    expected = cfg["model"]["loss"]["class_path"].rsplit(".", 1)[-1]
    assert type(cli.model.loss).__name__ == expected
    assert cli.trainer.max_epochs == 350
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"


def test_segmentation_half_of_the_demo(tmp_path, capsys):
    """digits-VOC: its own table (mIoU, pixel and image-wise ECE) and progress on val/miou."""
    tiny = ["--max-epochs", "1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
            "--trainer.log_every_n_steps=1"]  # fmt: skip
    demo.main(["--tasks", "digits_voc", "--losses", "ce", "acls", "--out", str(tmp_path), *tiny])
    out = capsys.readouterr().out
    head = "| loss | " + " | ".join(title for _, title in demo.SEG_COLUMNS) + " |"
    assert head in out.splitlines()
    rows = [line for line in out.splitlines() if line.startswith("| ce |")
            or line.startswith("| acls |")]  # fmt: skip
    assert len(rows) == 2 and all("-" not in row.split("|")[2] for row in rows)
    assert re.search(r"\[2/2\] acls\s+epoch 1/1\s+val/miou \d\.\d{3}\s+test/miou", out)
    _check_png(tmp_path / "digits_voc" / "reliability.png")
