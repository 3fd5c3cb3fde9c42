"""The analysis notebooks run end to end, show what they promise, and are committed without outputs.

Every notebook in ``notebooks/`` must be registered in :data:`EXPECTATIONS` with what its run
has to print and draw; an unregistered notebook fails :func:`test_notebook_is_registered`. The
notebooks run with the small setting (``CALIB_SMALL=1``: coarse grids, short runs) and with
``CALIB_RUN`` pointing into the test's temporary folder (where ``reliability.ipynb`` and
``compare_losses.ipynb`` train); the variables that point a notebook at a person's own runs
(``CALIB_RUNS``, ``CALIB_SEG_RUN``, ``CALIB_CONFIG``, ``CALIB_SEG_CONFIG``) are unset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@dataclass(frozen=True)
class Expect:
    """What one notebook's run must show.

    Attributes:
        printed: strings that must each appear in the text the notebook prints (stream
            outputs and the plain-text results of cells).
        images: the least number of PNG images (figures) it must draw.
    """

    printed: tuple[str, ...] = ()
    images: int = 0


# notebook stem -> expectations. Register every new notebook here.
EXPECTATIONS: dict[str, Expect] = {
    "reliability": Expect(
        printed=(
            "ECE",
            "accuracy",
            "average confidence",
            "per-class ECE",
            "pixel accuracy",
            "pixel ECE raw",
        ),
        images=7,  # 2 diagrams, histograms, per-class bars, pixel diagrams, 2 maps
    ),
    "label_smoothing_view": Expect(
        printed=(
            "max |autograd - closed form|",
            "stationary distance",
            "adaptive",
            "conditional",
            "weak spot",
        ),
        images=2,
    ),
    "compare_losses": Expect(
        printed=(
            "accuracy",
            "ECE",
            "after TS",
            "recomputed ECE against the reports",
        ),
        images=2,  # reliability diagrams of every row, ECE / accuracy bars
    ),
}

# Environment of every notebook run (CALIB_RUN is added per test: it needs tmp_path).
ENV = {"CALIB_SMALL": "1"}


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _images(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


def _execute(nb, folder) -> None:
    """Run every cell in a fresh kernel; a cell that raises fails the run (and the test)."""
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip


def test_a_raising_cell_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("assert x == 2")]
    with pytest.raises(CellExecutionError, match="AssertionError"):
        _execute(nb, tmp_path)


def test_notebooks_found():
    assert NOTEBOOKS, "no notebook in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_registered(path):
    assert path.stem in EXPECTATIONS, (
        f"{path.name} has no entry in EXPECTATIONS of {__file__}: register what it must "
        "print and draw"
    )


@pytest.mark.parametrize("stem", sorted(EXPECTATIONS))
def test_registered_notebook_exists(stem):
    assert (REPO / "notebooks" / f"{stem}.ipynb").is_file(), f"stale entry {stem!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    expect = EXPECTATIONS.get(path.stem)
    if expect is None:
        pytest.fail(f"{path.name} is not registered in EXPECTATIONS")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("CALIB_RUNS", "CALIB_SEG_RUN", "CALIB_CONFIG", "CALIB_SEG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALIB_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    _execute(nb, tmp_path)
    images = _images(nb)
    assert images >= expect.images, f"{path.name} drew {images} images, expected {expect.images}"
    printed = _text(nb)
    missing = [s for s in expect.printed if s not in printed]
    assert not missing, f"{path.name} did not print {missing}"
