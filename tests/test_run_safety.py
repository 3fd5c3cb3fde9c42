"""Runs never lose or mix results: refusals leave the run folder as it was; one-line errors.

Every refusal here is checked for three things: exit code 2, one line on stderr that names the
file or value (no traceback, no usage dump), and a run folder byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, tiny_trainer_args

from lightning_calib.cli import main
from lightning_calib.config import compose

CE = str(CONFIGS / "digits" / "ce.yaml")
LS = str(CONFIGS / "digits" / "ls.yaml")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def console(args: list[str], capsys, monkeypatch, env: dict[str, str] | None = None):
    """``lightning-calib ARGS`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lightning-calib", *args])
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    code = 0
    try:
        main()
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(args, capsys, monkeypatch, *needles) -> str:
    """Assert a one-line refusal with exit code 2 that contains every needle."""
    code, _, err = console(args, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lightning-calib: error: "), err
    assert "Traceback" not in err and "usage:" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 1-epoch digits run (best.ckpt and last.ckpt)."""
    root = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", CE, *tiny_trainer_args(root)])
    assert (root / "checkpoints" / "best.ckpt").is_file()
    return root


# ---------------------------------------------------------------- no weights, no scores


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_without_weights_is_refused(subcommand, tmp_path, capsys, monkeypatch):
    refused([subcommand, "--config", CE, f"--trainer.default_root_dir={tmp_path}"],
            capsys, monkeypatch, f"{subcommand} needs the weights", "--ckpt_path")  # fmt: skip
    assert snapshot(tmp_path) == {}


def test_random_weights_on_purpose_are_scored(tmp_path, capsys, monkeypatch):
    code, _, err = console(
        ["test", "--config", CE, *tiny_trainer_args(tmp_path), "--allow_random_weights=true"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize(("subcommand", "which"), [("test", "best"), ("test", "last"),
                                                   ("fit", "last")])  # fmt: skip
def test_missing_best_or_last_is_refused(subcommand, which, tmp_path, capsys, monkeypatch):
    (tmp_path / "keep.txt").write_text("other files stay")
    before = snapshot(tmp_path)
    refused([subcommand, "--config", CE, f"--trainer.default_root_dir={tmp_path}",
             f"--ckpt_path={which}"], capsys, monkeypatch,
            str(tmp_path / "checkpoints" / f"{which}.ckpt"), "does not exist")  # fmt: skip
    assert snapshot(tmp_path) == before


def test_best_is_found_in_a_new_process(trained, tmp_path):
    """``test --ckpt_path best`` after the fit's process ended: the fixed path is used."""
    cli = main(["test", "--config", CE, *tiny_trainer_args(trained), "--ckpt_path=best"])
    assert cli.trainer.ckpt_path == str(trained / "checkpoints" / "best.ckpt")
    assert "test/acc" in cli.trainer.callback_metrics


# ------------------------------------------------------------------ one folder, one run


def test_a_second_fit_into_a_run_folder_is_refused(trained, capsys, monkeypatch):
    before = snapshot(trained)
    args = ["fit", "--config", LS, *tiny_trainer_args(trained)]
    refused(args, capsys, monkeypatch, str(trained / "checkpoints"), "best.ckpt", "last.ckpt",
            "--ckpt_path last", "--overwrite true")  # fmt: skip
    assert snapshot(trained) == before


def test_overwrite_on_purpose_replaces_the_run(tmp_path):
    main(["fit", "--config", CE, *tiny_trainer_args(tmp_path)])
    main(["fit", "--config", LS, *tiny_trainer_args(tmp_path), "--overwrite=true"])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["loss"]["class_path"] == "losses.LabelSmoothing"


def test_default_root_dir_alone_moves_logs_and_saved_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's own runs/ folder would be created here
    root = tmp_path / "elsewhere"
    main(["fit", "--config", CE, f"--trainer.default_root_dir={root}",
          "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
          "--trainer.limit_val_batches=2", "--model.network.init_args.width=4"])  # fmt: skip
    files = set(snapshot(root))
    assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt"} <= files
    assert any(f.startswith("logs/") and f.endswith("config.yaml") for f in files), files
    assert any(f.startswith("logs/") and f.endswith("metrics.csv") for f in files), files
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------- the checkpoint's hyperparameters


def test_a_value_the_checkpoint_would_override_is_refused(trained, capsys, monkeypatch):
    """``--model.network.init_args.width 8`` on a width-4 checkpoint silently tested width 4."""
    before = snapshot(trained)
    args = ["test", "--config", CE, *tiny_trainer_args(trained),
            f"--ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
            "--model.network.init_args.width=8"]  # fmt: skip
    refused(args, capsys, monkeypatch, "model.network.init_args.width=4", "says 8",
            "best.ckpt")  # fmt: skip
    assert snapshot(trained) == before


# ---------------------------------------------------------------- one-line config errors


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--trainer.max_epoch=3"], ["--trainer.max_epoch=3"]),
        (["--model.loss=losses.NoSuchLoss"], ["model.loss", "NoSuchLoss", "no attribute"]),
        (["--trainer.max_epochs=abc"], ["trainer.max_epochs", "int", "abc"]),
        (
            ["--model.loss=losses.LabelSmoothing", "--model.loss.init_args.alpha=-1"],
            ["`alpha`", "-1"],
        ),
        (["--model.num_classes=7"], ["num_classes"]),
    ],
    ids=["unknown-key", "class-path", "wrong-type", "constructor-value", "linked-key"],
)
def test_config_mistakes_are_one_line(extra, needles, tmp_path, capsys, monkeypatch):
    refused(["fit", "--config", CE, f"--trainer.default_root_dir={tmp_path}", *extra],
            capsys, monkeypatch, *needles)  # fmt: skip
    assert snapshot(tmp_path) == {}


def test_unknown_key_in_a_config_file_is_one_line(tmp_path, capsys, monkeypatch):
    cfg = compose(CE)
    cfg["trainer"]["max_epoch"] = 3
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    refused(["fit", "--config", str(path)], capsys, monkeypatch, "max_epoch")


@pytest.mark.parametrize("with_base", [False, True])
def test_yaml_syntax_error_names_file_and_line(with_base, tmp_path, capsys, monkeypatch):
    path = tmp_path / "broken.yaml"
    head = f"__base__: {CE}\n" if with_base else ""
    path.write_text(head + "trainer:\n  max_epochs: 3\n model:\n  x: 1\n")
    line = 4 if with_base else 3
    refused(["fit", "--config", str(path)], capsys, monkeypatch, str(path), f"line {line}")


def test_traceback_on_request(tmp_path, capsys, monkeypatch):
    args = ["test", "--config", CE, f"--trainer.default_root_dir={tmp_path}"]
    monkeypatch.setenv("LIGHTNING_CALIB_TRACEBACK", "1")
    monkeypatch.setattr(sys, "argv", ["lightning-calib", *args])
    with pytest.raises(ValueError, match="needs the weights"):
        main()


# -------------------------------------------------------------------------------- data


def test_missing_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    cifar = str(CONFIGS / "cifar10" / "ce.yaml")
    refused(["fit", "--config", cifar, f"--data.init_args.root={tmp_path / 'nope'}",
             f"--trainer.default_root_dir={tmp_path / 'run'}"],
            capsys, monkeypatch, "CIFAR10 not found", str(tmp_path / "nope"))  # fmt: skip


def test_dataset_root_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    cifar = str(CONFIGS / "cifar10" / "ce.yaml")
    (tmp_path / "data.tar").write_bytes(b"not a folder")
    refused(["fit", "--config", cifar, f"--data.init_args.root={tmp_path / 'data.tar'}",
             f"--trainer.default_root_dir={tmp_path / 'run'}"],
            capsys, monkeypatch, "is a file, not a folder", "data.tar")  # fmt: skip


# --------------------------------------------------------------- monitor and predict


def test_a_monitor_that_is_never_logged_is_refused_before_training(tmp_path, capsys,
                                                                    monkeypatch):  # fmt: skip
    refused(["fit", "--config", CE, *tiny_trainer_args(tmp_path),
             "--checkpoint.monitor=val/accuracy"],
            capsys, monkeypatch, "'val/accuracy'", "never logged", "val/acc")  # fmt: skip
    assert not (tmp_path / "checkpoints").exists()  # stopped before the first epoch ended
    metrics = list(tmp_path.rglob("metrics.csv"))
    assert all("train/loss" not in m.read_text() for m in metrics)


def test_predict_writes_its_outputs_in_the_run_folder(trained, capsys, monkeypatch):
    args = ["predict", "--config", CE, *tiny_trainer_args(trained), "--ckpt_path=last"]
    code, out, err = console(args, capsys, monkeypatch)
    assert code == 0, err
    path = trained / "predictions.pt"
    assert f"predictions written to {path}" in out + err
    saved = torch.load(path, weights_only=True)
    assert saved["logits"].shape[1] == 10 and len(saved["target"]) == len(saved["logits"])
    assert torch.equal(saved["logits_ts"], saved["logits"] / saved["temperature"])


# ------------------------------------------------------------------- checkpoint files


@pytest.mark.parametrize("kind", ["empty", "truncated", "not-a-checkpoint", "random-bytes"])
def test_a_damaged_checkpoint_is_one_line_naming_it(kind, trained, tmp_path, capsys,
                                                    monkeypatch):  # fmt: skip
    good = (trained / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / f"{kind}.ckpt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        bad.write_bytes(bytes(range(256)) * 64)
    refused(["test", "--config", CE, *tiny_trainer_args(tmp_path / "run"), f"--ckpt_path={bad}"],
            capsys, monkeypatch, str(bad))  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_of_another_class_count_is_one_line(trained, tmp_path, capsys, monkeypatch):
    ckpt = trained / "checkpoints" / "best.ckpt"
    refused(["test", "--config", CE, *tiny_trainer_args(tmp_path), f"--ckpt_path={ckpt}",
             "--data=dense_toy.ToyDenseDataModule"],
            capsys, monkeypatch, "num_classes=10", "num_classes=4", str(ckpt))  # fmt: skip


def test_resume_with_another_optimizer_is_one_line(trained, capsys, monkeypatch):
    before = snapshot(trained)
    refused(["fit", "--config", CE, *tiny_trainer_args(trained), "--ckpt_path=last",
             "--trainer.max_epochs=3", "--model.optimizer=torch.optim.Adam"],
            capsys, monkeypatch, "model.optimizer", "SGD", "Adam")  # fmt: skip
    assert snapshot(trained) == before


def test_resume_with_no_epoch_left_is_refused(trained, capsys, monkeypatch):
    before = snapshot(trained)
    refused(["fit", "--config", CE, *tiny_trainer_args(trained), "--ckpt_path=last",
             "--trainer.max_epochs=1"], capsys, monkeypatch, "max_epochs")  # fmt: skip
    assert {k: v for k, v in snapshot(trained).items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


def test_a_failed_save_stops_the_run_naming_the_path(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    target = blocker / "checkpoints"
    code, _, err = console(["fit", "--config", CE, *tiny_trainer_args(tmp_path / "run", epochs=2),
                            f"--checkpoint.dirpath={target}"], capsys, monkeypatch)  # fmt: skip
    assert code == 2 and str(target) in err and "Traceback" not in err
    # the first save (end of epoch 0) failed: epoch 1 never ran
    import csv

    rows = [row for m in (tmp_path / "run").rglob("metrics.csv")
            for row in csv.DictReader(m.open())]  # fmt: skip
    assert rows and {row["epoch"] for row in rows} == {"0"}


# ---------------------------------------------------------------------------- the lock


def test_a_live_run_holds_its_folder(tmp_path, capsys, monkeypatch):
    import subprocess

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from lightning_calib.checkpointing import RunLock;"
         f"RunLock({str(tmp_path)!r}, command='other fit').acquire();"
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused(["fit", "--config", CE, *tiny_trainer_args(tmp_path)], capsys, monkeypatch,
                str(tmp_path), "in use", str(holder.pid))  # fmt: skip
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock went with it
    code, _, err = console(["fit", "--config", CE, *tiny_trainer_args(tmp_path)],
                           capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_a_missing_checkpoint_file_is_one_line(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.ckpt"
    refused(["test", "--config", CE, f"--trainer.default_root_dir={tmp_path / 'run'}",
             f"--ckpt_path={missing}"], capsys, monkeypatch, str(missing))  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_the_cli_trainer_writes_checkpoints_atomically(tmp_path):
    from lightning_calib.checkpointing import AtomicCheckpointIO

    cli = main(["--config", CE, *tiny_trainer_args(tmp_path)], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_every_test_writes_a_report_beside_the_earlier_ones(trained, capsys, monkeypatch):
    import json

    before = {p.name: p.read_bytes() for p in trained.glob("report*.json")}  # other tests'
    for _ in range(2):
        code, out, err = console(["test", "--config", CE, *tiny_trainer_args(trained),
                                  "--ckpt_path=best"], capsys, monkeypatch)  # fmt: skip
        assert code == 0, err
    n = len(before)
    first = trained / ("report.json" if n == 0 else f"report-{n}.json")
    second = trained / f"report-{n + 1}.json"
    assert f"report written to {second}" in out
    assert all((trained / name).read_bytes() == data for name, data in before.items())
    report = json.loads(first.read_text())
    assert json.loads(second.read_text())["metrics"] == report["metrics"]
    logged = {"acc", "top5", "nll", "brier", "ece", "mce", "aece", "cece"}
    assert logged | {f"{k}_ts" for k in logged} | {"temperature"} == set(report["metrics"])
    assert report["temperature"] == report["metrics"]["temperature"]
    assert report["checkpoint"] == str(trained / "checkpoints" / "best.ckpt")
    assert report["config"]["model"]["loss"]["class_path"] == "losses.CrossEntropy"
    assert report["data"]["sizes"] == {"train": 897, "val": 360, "test": 540}
    assert report["data"]["class_names"] == [str(d) for d in range(10)]
    assert any(Path(p).name.startswith("reliability") for p in report["pictures"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in report["pictures"])
    raw, ts = report["reliability"]["raw"], report["reliability"]["ts"]
    assert sum(raw["count"]) == sum(ts["count"]) == 540  # every test image, in 15 bins
    assert len(raw["lower"]) == 15 and raw["upper"][-1] == 1.0
