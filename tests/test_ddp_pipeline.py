"""The whole validation pipeline on 2 DDP processes gives the single-process numbers.

Every calibration metric and the temperature search keep sum states, so with the digits
validation split (360 images, even shards: no sampler padding) the 2-process values equal the
1-process ones up to float64 summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO, tiny_trainer_args

from lightning_calib.cli import main

CONFIG = str(CONFIGS / "digits" / "acls.yaml")
DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]


def run_cli_in_ddp(command: list[str], cwd: Path) -> dict:
    """``lightning-calib COMMAND`` on 2 gloo processes (a script: DDP re-launches it); the
    metrics rank 0 wrote, with ``ranks``: what each rank parsed (see ``ddp_cli_script.py``)."""
    out = cwd / "ddp.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_cli_script.py"), *command, *DDP],
        capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "DDP_OUT": str(out)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    result["ranks"] = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in (0, 1)]
    return result


def test_ddp_validate_equals_single_process(tmp_path):
    args = tiny_trainer_args(tmp_path, epochs=2, batches=4)
    main(["fit", "--config", CONFIG, *args])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    eval_args = [
        "--trainer.limit_val_batches=null",
        "--data.init_args.eval_batch_size=60",
        "--model.network.init_args.width=4",
        f"--trainer.default_root_dir={tmp_path / 'eval'}",
    ]
    single = main(["validate", "--config", CONFIG, f"--ckpt_path={ckpt}", *eval_args])
    expected = {k: float(v) for k, v in single.trainer.callback_metrics.items()}

    got = run_cli_in_ddp(["validate", "--config", CONFIG, f"--ckpt_path={ckpt}", *eval_args],
                         tmp_path)  # fmt: skip
    got.pop("ranks")
    assert got.pop("world_size") == 2
    keys = {"val/acc", "val/nll", "val/ece", "val/aece", "val/cece", "val/mce", "val/brier",
            "val/temperature", "val/loss", "val/loss_ce", "val/loss_reg"}  # fmt: skip
    assert keys <= expected.keys() and keys <= got.keys()
    for key in sorted(keys):
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key


def test_ddp_fit_from_a_composed_config_relaunches_the_same_config(tmp_path):
    """A 2-process fit of a ``__base__``-composed config with a command-line override: the
    re-launched rank parses the user's short command line again (``sys.argv`` is never
    rewritten) and ends with the same config as rank 0."""
    command = [
        "fit", "--config", CONFIG, *tiny_trainer_args(tmp_path / "run", epochs=1, batches=2),
        "--model.loss.init_args.margin=6.0",
    ]  # fmt: skip
    result = run_cli_in_ddp(command, tmp_path)
    assert result["world_size"] == 2
    ranks = result["ranks"]
    assert ranks[0]["config"] == ranks[1]["config"]
    assert ranks[1]["argv"] == [*command, *DDP]  # re-launched with what the user typed
    config = json.loads(ranks[1]["config"])
    assert config["model"]["loss"]["class_path"] == "losses.ACLS"
    assert config["model"]["loss"]["init_args"]["margin"] == 6.0
    assert config["model"]["network"]["init_args"]["width"] == 4  # the override, not the base
    assert config["trainer"]["max_epochs"] == 1
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["loss"]["init_args"]["margin"] == 6.0
