"""The ``lightning-calib`` CLI: configs, fit/test round trip, resume, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, REPO, tiny_trainer_args

from lightning_calib.cli import main
from lightning_calib.config import ConfigError, compose

DIGITS = sorted(p for p in (CONFIGS / "digits").glob("*.yaml") if not p.stem.startswith("_"))
ALL_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.stem.startswith("_"))


def test_every_loss_has_a_digits_config():
    assert {p.stem for p in DIGITS} == {
        "ce", "ls", "focal", "flsd", "ecp", "mmce", "mbls", "cpc", "acls"
    }  # fmt: skip


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_config_composes_completely(config):
    cfg = compose(config)
    assert {"trainer", "data", "model"} <= cfg.keys()
    assert cfg["model"]["loss"]["class_path"].startswith("losses.")
    assert "num_classes" not in cfg["model"], "num_classes is linked from the datamodule"
    assert cfg["trainer"]["default_root_dir"] == f"runs/{config.parent.name}/{config.stem}"


@pytest.mark.parametrize("config", DIGITS, ids=lambda p: p.stem)
def test_digits_configs_instantiate(config, tmp_path):
    cli = main(["--config", str(config), *tiny_trainer_args(tmp_path)], run=False)
    expected = compose(config)["model"]["loss"]["class_path"].split(".")[-1]
    assert type(cli.model.loss).__name__ == expected
    assert cli.model.num_classes == cli.datamodule.num_classes == 10
    assert cli.model.network.fc.out_features == 10
    assert cli.trainer.gradient_clip_val == 2.0
    ckpts = list(cli.trainer.checkpoint_callbacks)
    assert {Path(cb.dirpath) for cb in ckpts} == {tmp_path / "checkpoints"}
    assert sorted(cb.monitor or "-" for cb in ckpts) == ["-", "val/acc"]
    # what `ckpt_path="best"` reads is the monitored checkpoint, not last.ckpt
    assert cli.trainer.checkpoint_callback.monitor == "val/acc"


def test_fast_dev_run_fit_of_digits_acls(tmp_path):
    cli = main(
        ["fit", "--config", str(CONFIGS / "digits" / "acls.yaml"),
         *tiny_trainer_args(tmp_path), "--trainer.fast_dev_run=true"]
    )  # fmt: skip
    assert cli.trainer.state.finished
    logged = cli.trainer.logged_metrics
    keys = {"train/loss_step", "train/loss_ce_step", "train/loss_reg_step", "val/ece", "val/acc"}
    assert keys <= logged.keys()
    # total = ce + alpha * reg with alpha = 0.1 from the YAML
    total, ce, reg = (logged[f"train/loss{k}_step"] for k in ("", "_ce", "_reg"))
    assert torch.isclose(total, ce + 0.1 * reg, rtol=1e-5)


def test_fit_then_test_with_the_checkpoint_and_resume(tmp_path):
    config = str(CONFIGS / "digits" / "acls.yaml")
    args = tiny_trainer_args(tmp_path, epochs=2, batches=3)
    fitted = main(["fit", "--config", config, *args])
    best, last = tmp_path / "checkpoints" / "best.ckpt", tmp_path / "checkpoints" / "last.ckpt"
    # in the fitting process, `ckpt_path="best"` is the monitored checkpoint (as the demo uses)
    fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, ckpt_path="best", verbose=False)
    assert Path(fitted.trainer.ckpt_path) == best
    assert best.is_file() and last.is_file()
    assert torch.load(last, weights_only=False)["epoch"] == 1
    saved_config = next(tmp_path.rglob("config.yaml"))

    cli = main(["test", "--config", str(saved_config), f"--ckpt_path={best}"])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/ece"]) <= 1.0
    assert float(metrics["test/acc"]) == pytest.approx(float(metrics["test/acc_ts"]))
    ckpt_t = float(torch.load(best, weights_only=False)["state_dict"]["temperature"])
    assert float(metrics["test/temperature"]) == pytest.approx(ckpt_t)

    # resume: `--ckpt_path last` continues at epoch 2 instead of starting over
    cli = main(["fit", "--config", config, *args, "--trainer.max_epochs=3", "--ckpt_path=last"])
    assert cli.trainer.current_epoch == 3
    assert torch.load(last, weights_only=False)["epoch"] == 2
    assert cli.trainer.global_step == 9  # 3 epochs x 3 batches: the first 6 were restored


def _console(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Run the console entry point (``lightning-calib fit ...``) in-process."""
    monkeypatch.setattr(sys, "argv", ["lightning-calib", "fit", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_print_config_round_trips(tmp_path, capsys, monkeypatch):
    config = str(CONFIGS / "digits" / "mbls.yaml")
    code, first, _ = _console(
        ["--config", config, "--model.loss.init_args.margin=6.0", "--print_config"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert code in (0, None)
    (tmp_path / "printed.yaml").write_text(first)
    _, second, _ = _console(
        ["--config", str(tmp_path / "printed.yaml"), "--print_config"], capsys, monkeypatch
    )
    assert yaml.safe_load(first) == yaml.safe_load(second)
    assert yaml.safe_load(first)["model"]["loss"]["init_args"]["margin"] == 6.0
    assert yaml.safe_load(first)["model"]["network"]["class_path"] == "models.ResNet"


def _cli_error(args: list[str], capsys, monkeypatch) -> str:
    code, _, err = _console(args, capsys, monkeypatch)
    assert code == 2
    return err


def test_unknown_loss_class_path_is_a_clear_error(capsys, monkeypatch):
    err = _cli_error(
        ["--config", str(CONFIGS / "digits" / "ce.yaml"), "--model.loss=losses.NoSuchLoss"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert "model.loss" in err and "NoSuchLoss" in err


def test_config_key_typo_is_a_clear_error(tmp_path, capsys, monkeypatch):
    cfg = compose(CONFIGS / "digits" / "ce.yaml")
    cfg["trainer"]["max_epoch"] = 3  # typo of max_epochs
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    err = _cli_error(["--config", str(path)], capsys, monkeypatch)
    assert "max_epoch" in err
    # on the command line too: no silent prefix match to max_epochs
    err = _cli_error(
        ["--config", str(CONFIGS / "digits" / "ce.yaml"), "--trainer.max_epoch=3"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert "unrecognized arguments: --trainer.max_epoch=3" in err


def test_missing_config_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    err = _cli_error(["--config", str(tmp_path / "nope.yaml")], capsys, monkeypatch)
    assert "config file not found" in err and "nope.yaml" in err
    assert "Traceback" not in err
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        main(["--config", str(tmp_path / "nope.yaml")], run=False)


def test_num_classes_is_linked_not_typed(capsys, monkeypatch):
    err = _cli_error(
        ["--config", str(CONFIGS / "digits" / "ce.yaml"), "--model.num_classes=7"],
        capsys, monkeypatch,
    )  # fmt: skip
    assert "num_classes" in err


def test_console_script_exits_zero_after_a_run(tmp_path, monkeypatch):
    from lightning_calib.cli import console

    args = [*tiny_trainer_args(tmp_path), "--trainer.fast_dev_run=true"]
    monkeypatch.setattr(sys, "argv", ["lightning-calib", "fit", "--config",
                                      str(CONFIGS / "digits" / "ce.yaml"), *args])  # fmt: skip
    assert console() == 0


def test_console_script_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "lightning_calib.cli", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0 and "fit" in out.stdout and "test" in out.stdout


def test_num_classes_mismatch_between_data_and_network():
    from lightning_calib.module import CalibrationModule
    from models import ResNet

    with pytest.raises(ValueError, match=r"num_classes=7 but the data has num_classes=10"):
        CalibrationModule(network=ResNet(7, depth=8, width=4), num_classes=10)


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    """2 epochs + resume to 3 == 3 epochs straight: shuffles, augmentation and optimizer state
    all continue (the RNG states travel in the checkpoint)."""
    config = str(CONFIGS / "digits" / "acls.yaml")
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(["fit", "--config", config, *tiny_trainer_args(straight, epochs=3, batches=3)])
    args = tiny_trainer_args(split, epochs=2, batches=3)
    main(["fit", "--config", config, *args])
    main(["fit", "--config", config, *args, "--trainer.max_epochs=3", "--ckpt_path=last"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"] == 9
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    momentum_a = a["optimizer_states"][0]["state"]
    momentum_b = b["optimizer_states"][0]["state"]
    assert all(torch.equal(momentum_a[k]["momentum_buffer"], momentum_b[k]["momentum_buffer"])
               for k in momentum_a)  # fmt: skip


def test_a_printed_config_reruns_to_the_same_weights(tmp_path, capsys, monkeypatch):
    """``fit --print_config`` output, saved and run as the only config, trains the same model
    bit for bit as the composed command line it was printed from."""
    config = str(CONFIGS / "digits" / "acls.yaml")
    composed, printed = tmp_path / "composed", tmp_path / "printed"
    args = ["--model.loss.init_args.margin=6.0", *tiny_trainer_args(composed, batches=3)]
    code, text, _ = _console(["--config", config, *args, "--print_config"],
                             capsys, monkeypatch)  # fmt: skip
    assert code in (0, None)
    assert "__base__" not in text
    (tmp_path / "printed.yaml").write_text(text)
    main(["fit", "--config", config, *args])
    main(["fit", "--config", str(tmp_path / "printed.yaml"),
          f"--trainer.default_root_dir={printed}"])  # fmt: skip
    a = torch.load(composed / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(printed / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["hyper_parameters"]["loss"]["init_args"]["margin"] == 6.0
    assert a["hyper_parameters"] == b["hyper_parameters"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_callbacks_the_cli_adds_name_an_importable_module():
    """Run as ``python -m lightning_calib.cli`` the module is ``__main__``; the saved config
    must still name ``lightning_calib.cli`` or it cannot be read back."""
    from lightning_calib.cli import _namespace_callback

    cls = type("LastCheckpoint", (), {"__module__": "__main__"})
    assert _namespace_callback(cls).class_path == "lightning_calib.cli.LastCheckpoint"
