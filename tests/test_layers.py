"""The import graph keeps its layers: the library never imports the application.

Layers, bottom up:

* core: ``lightning_calib.rows`` (flatten-and-mask), ``lightning_calib.metrics`` (metrics and
  their presets), ``losses``, ``models``, ``datamodules``;
* application: ``lightning_calib.module`` (the LightningModule), ``lightning_calib.cli``,
  ``lightning_calib.config``, ``lightning_calib.callbacks``, ``lightning_calib.demo``,
  ``lightning_calib.temperature``, ``lightning_calib.schedulers``.

Nothing in the core imports the application (checked statically on every ``import`` statement,
including those inside functions, and dynamically on ``sys.modules`` in a fresh interpreter),
and the module does not import ``losses`` (the loss is an argument).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

CORE = ["losses", "datamodules", "models", "lightning_calib/metrics", "lightning_calib/rows.py"]
APP = {
    "lightning_calib.module",
    "lightning_calib.cli",
    "lightning_calib.config",
    "lightning_calib.callbacks",
    "lightning_calib.demo",
    "lightning_calib.temperature",
    "lightning_calib.schedulers",
}


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """Every module an ``import`` statement in ``path`` names (absolute, with its line)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def core_files() -> list[Path]:
    files = []
    for entry in CORE:
        path = REPO / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def is_app(module: str) -> bool:
    return any(module == app or module.startswith(app + ".") for app in APP)


def test_the_core_never_imports_the_application():
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in core_files()
        for line, module in imported_modules(path)
        if is_app(module)
    ]
    assert core_files(), "no core files found"
    assert not offenders, "\n".join(offenders)


def test_the_module_does_not_import_losses():
    path = REPO / "lightning_calib" / "module.py"
    names = [m for _, m in imported_modules(path)]
    assert not [m for m in names if m == "losses" or m.startswith("losses.")]


def test_the_scan_sees_imports_inside_functions(tmp_path):
    """The checker itself: an import hidden in a function body is found."""
    (tmp_path / "lightning_calib" / "metrics").mkdir(parents=True)
    probe = tmp_path / "lightning_calib" / "metrics" / "probe.py"
    probe.write_text("def f():\n    from ..module import CalibrationModule\n    import os\n")
    found = [m for _, m in imported_modules(probe, root=tmp_path)]
    assert "lightning_calib.module.CalibrationModule" in found and "os" in found
    assert any(is_app(m) for m in found)


@pytest.mark.parametrize(
    "package",
    ["losses", "datamodules", "models", "lightning_calib.metrics", "lightning_calib.rows"],
)
def test_importing_a_core_package_loads_no_application_module(package):
    code = (
        "import json, sys\n"
        f"import {package}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('lightning_calib'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if is_app(m)], loaded
