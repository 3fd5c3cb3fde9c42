"""2-process gloo DDP on CPU, uneven shards: every registered metric equals its 1-process value.

The metrics, and the extra methods compared (``NAME:METHOD``), come from the registry
``tests/metric_cases.py``, read by ``tests/ddp_metrics_script.py`` as well.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from metric_cases import CASES

# ~20-30 s: two fresh interpreters import torch + torchmetrics; part of the default run.

SCRIPT = Path(__file__).with_name("ddp_metrics_script.py")
METRICS = [case.name for case in CASES] + [
    f"{case.name}:{method}" for case in CASES for method in case.extras
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


def _floats(value):
    """A hex float, or a list of them (the extras), as a list of floats."""
    return [float.fromhex(v) for v in (value if isinstance(value, list) else [value])]


@pytest.mark.parametrize("name", METRICS)
def test_ddp_value_equals_single_process_value(values, name):
    ddp = _floats(values["ddp"][name])
    single = _floats(values["single"][name])
    assert len(ddp) == len(single) > 0
    # float64 sums in another order: equal to the last bits (integer states are exact below)
    assert ddp == pytest.approx(single, rel=1e-13, abs=1e-15)
    assert all(v == v for v in ddp)  # not NaN


def test_every_registered_value_was_computed(values):
    assert set(METRICS) <= set(values["ddp"]) and set(METRICS) <= set(values["single"])


def test_ddp_reduced_states_are_exact(values):
    ddp, single = values["ddp"], values["single"]
    assert ddp["ECE:count"] == single["ECE:count"]
    assert ddp["ECE:correct_sum"] == single["ECE:correct_sum"]
    assert sum(ddp["ECE:count"]) > 0
    for a, b in zip(ddp["ECE:conf_sum"], single["ECE:conf_sum"]):
        assert float.fromhex(a) == pytest.approx(float.fromhex(b), rel=1e-14)
