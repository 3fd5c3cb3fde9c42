"""2-process gloo DDP on CPU, uneven shards: every metric equals its 1-process value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# ~20-30 s: two fresh interpreters import torch + torchmetrics; part of the default run.

SCRIPT = Path(__file__).with_name("ddp_metrics_script.py")
METRICS = [
    "ECE",
    "MCE",
    "AdaptiveECE",
    "AdaptiveECE-streaming",
    "AdaptiveECE-streaming:bound",
    "ClasswiseECE",
    "ImagewiseECE",
    "BatchAveragedECE",
    "NLL",
    "BrierScore",
    "TopKAccuracy",
]


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "values.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=SCRIPT.parent.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", METRICS)
def test_ddp_value_equals_single_process_value(values, name):
    ddp = float.fromhex(values["ddp"][name])
    single = float.fromhex(values["single"][name])
    # float64 sums in another order: equal to the last bits (integer states are exact below)
    assert ddp == pytest.approx(single, rel=1e-13, abs=1e-15)
    assert ddp == ddp  # not NaN


def test_ddp_reduced_states_are_exact(values):
    ddp, single = values["ddp"], values["single"]
    assert ddp["ECE:count"] == single["ECE:count"]
    assert ddp["ECE:correct_sum"] == single["ECE:correct_sum"]
    assert sum(ddp["ECE:count"]) > 0
    for a, b in zip(ddp["ECE:conf_sum"], single["ECE:conf_sum"]):
        assert float.fromhex(a) == pytest.approx(float.fromhex(b), rel=1e-14)
