"""``lightning-calib report RUN_DIR...``: one paper-style table from the reports of many runs.

Every ``lightning-calib test`` writes ``<run>/report.json`` (:mod:`lightning_calib.report`);
this module reads them back and lays them out as the tables of calibration papers: one row
per method, the raw metrics, the same after temperature scaling, and ``T``.

Finding the reports (:func:`find_reports`). Each path given may be

* a report file (any ``.json`` file written by ``test``): used as it is;
* a folder: searched, itself and every folder below it, for run folders, i.e. folders that
  hold ``report.json`` / ``report-N.json``. A run folder counts once, with its **newest**
  report (by ``created``; on a tie, or without ``created``, the highest ``N``): a second
  ``test`` of the same run is a re-measurement, not a new seed. Pass report files by name to
  use others.

A folder holding no report anywhere is not skipped silently: it is collected as missing (with
the reason), named in a warning on stderr and in a footnote of the Markdown table; so is a run
folder below a given folder that has checkpoints but no report (trained, never tested), and a
report that cannot be read. The command fails (exit 2) only when no report at all is found. A
path that does not exist is an error (exit 2): it is a typo, not an untested run.

Grouping (:func:`group_runs`). Runs whose composed configs are equal except for the seed and
the places the run writes to (:data:`IGNORED_KEYS`: ``seed_everything``, the run folder,
logger folders, checkpoint folders and paths, and command flags that change no number) form
one row: mean ± sample standard deviation (``ddof=1``) over its ``n`` runs; a row of one run
shows no ±. The row is named by its loss (:data:`METHODS`); rows of the same loss (and
dataset) that differ in some other key carry the fewest differing keys that tell them apart,
e.g. ``ACLS (alpha=0.2)``. When a table holds more than one dataset (``data.class_path``), a
``Data`` column comes first.

Layout (:func:`render_markdown`, :func:`render_csv`). Classification reports get Acc, ECE,
AECE, CECE, NLL raw, then ECE, AECE, CECE, NLL after temperature scaling, and T (see
:data:`CLASSIFICATION_COLUMNS`); segmentation reports (those with ``miou``) get mIoU (and the
foreground mIoU where reported), Acc, ECE, AECE, CECE, NLL and the image-wise ECE raw and
after scaling, and T (:data:`SEGMENTATION_COLUMNS`). Both kinds in one call give two tables.
Markdown shows Acc, mIoU and the ECEs in percent with 2 decimals, NLL with 3, T with 2, and
an en dash for a metric a row lacks. CSV holds the report's own units (fractions, not percent), a
``<key>_mean`` and a ``<key>_std`` column per metric at full precision, and the report files
of each row.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from lightning_calib.files import write_atomic

__all__ = [
    "CLASSIFICATION_COLUMNS",
    "IGNORED_KEYS",
    "METHODS",
    "SEGMENTATION_COLUMNS",
    "Column",
    "Group",
    "ReportSearch",
    "ReportTableError",
    "Run",
    "find_reports",
    "group_runs",
    "load_report",
    "make_table",
    "method_name",
    "render_csv",
    "render_markdown",
    "report_main",
]

#: ``report.json``, ``report-1.json``, ... (what :func:`lightning_calib.report.write_report` names).
REPORT_FILE = re.compile(r"report(?:-(\d+))?\.json")

#: Loss class name -> short method name, in the row order of the papers (baseline first).
METHODS: dict[str, str] = {
    "CrossEntropy": "CE",
    "CrossEntropyLoss": "CE",  # torch.nn's, the module's default loss
    "MMCE": "MMCE",
    "EntropyPenalty": "ECP",
    "LabelSmoothing": "LS",
    "FocalLoss": "FL",
    "FLSD": "FLSD",
    "CPC": "CPC",
    "MbLS": "MbLS",
    "ACLS": "ACLS",
}
_METHOD_RANK = {name: rank for rank, name in enumerate(dict.fromkeys(METHODS.values()))}

#: Flattened config keys (dotted, list items by index) that do not tell two runs' settings
#: apart: the seed, where the run writes, and command flags that change no number.
IGNORED_KEYS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern)
    for pattern in (
        r"seed_everything",
        r"ckpt_path",
        r"overwrite",
        r"verbose",
        r"trainer\.default_root_dir",
        r"trainer\.logger(\.\d+)?\.init_args\.(save_dir|log_dir|dir|name|version)",
        r"trainer\.callbacks\.\d+\.init_args\.dirpath",
        r"checkpoint\.dirpath",
    )
)

# Labels of rows that share a loss: the keys of these sub-configs are tried first.
_LABEL_PRIORITY = ("model.loss.", "data.", "model.network.", "model.", "trainer.")
_SKIPPED_DIRS = ("__pycache__",)
_DASH = "\u2013"  # an en dash: "not reported"


class ReportTableError(ValueError):
    """A report command that cannot give a table (bad path, nothing found, output exists)."""


@dataclass(frozen=True)
class Column:
    """One column of the table.

    Attributes:
        header: the Markdown header.
        key: the metric key in ``report["metrics"]``.
        scale: the factor the Markdown shows the value with (100: percent).
        digits: the decimals the Markdown shows.
        optional: dropped from a table where no row has the metric.
    """

    header: str
    key: str
    scale: float = 100.0
    digits: int = 2
    optional: bool = False


CLASSIFICATION_COLUMNS: tuple[Column, ...] = (
    Column("Acc", "acc"),
    Column("ECE", "ece"),
    Column("AECE", "aece"),
    Column("CECE", "cece"),
    Column("NLL", "nll", scale=1.0, digits=3),
    Column("ECE (TS)", "ece_ts"),
    Column("AECE (TS)", "aece_ts"),
    Column("CECE (TS)", "cece_ts"),
    Column("NLL (TS)", "nll_ts", scale=1.0, digits=3),
    Column("T", "temperature", scale=1.0, digits=2),
)

SEGMENTATION_COLUMNS: tuple[Column, ...] = (
    Column("mIoU", "miou"),
    Column("mIoU (fg)", "miou_fg", optional=True),
    Column("Acc", "acc"),
    Column("ECE", "ece"),
    Column("AECE", "aece"),
    Column("CECE", "cece"),
    Column("NLL", "nll", scale=1.0, digits=3),
    Column("Image ECE", "image_ece"),
    Column("ECE (TS)", "ece_ts"),
    Column("AECE (TS)", "aece_ts"),
    Column("CECE (TS)", "cece_ts"),
    Column("NLL (TS)", "nll_ts", scale=1.0, digits=3),
    Column("Image ECE (TS)", "image_ece_ts"),
    Column("T", "temperature", scale=1.0, digits=2),
)

_TASK_COLUMNS = {"classification": CLASSIFICATION_COLUMNS, "segmentation": SEGMENTATION_COLUMNS}


# --------------------------------------------------------------------------- finding reports


@dataclass
class ReportSearch:
    """What :func:`find_reports` found.

    Attributes:
        reports: one report file per run folder (the newest), and every report file given by
            name, in the order found.
        missing: ``(folder, reason)`` of each place that was expected to hold a report.
    """

    reports: list[Path] = field(default_factory=list)
    missing: list[tuple[Path, str]] = field(default_factory=list)


def _report_index(path: Path) -> int:
    match = REPORT_FILE.fullmatch(path.name)
    return int(match.group(1) or 0) if match else 0


def _created(path: Path) -> datetime | None:
    """The ``created`` time of a report (aware), or None when it cannot be read."""
    try:
        value = json.loads(path.read_text()).get("created")
        stamp = datetime.fromisoformat(str(value))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def newest_report(files: Sequence[Path]) -> Path:
    """The newest of a run folder's reports: latest ``created``, then highest ``report-N``."""
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    return max(files, key=lambda p: (_created(p) or oldest, _report_index(p)))


def find_reports(paths: Iterable[str | os.PathLike]) -> ReportSearch:
    """Find the report of every run under ``paths`` (see the module docstring).

    Args:
        paths: run folders, report files, or folders to search for run folders.

    Returns:
        The reports to tabulate and the folders that were expected to hold one.

    Raises:
        ReportTableError: a path does not exist, or a file given is not a ``.json`` file.
    """
    explicit: dict[Path, Path] = {}  # resolved -> as given
    runs: dict[Path, list[Path]] = {}  # resolved run folder -> its report files
    search = ReportSearch()
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            if path.suffix != ".json":
                raise ReportTableError(f"{path}: not a report (a report is a .json file)")
            explicit.setdefault(path.resolve(), path)
        elif path.is_dir():
            found, untested = _walk(path)
            for folder, files in found.items():
                runs.setdefault(folder.resolve(), files)
            search.missing.extend(untested)
            if not found and not untested:
                search.missing.append((path, "no report*.json in it or in any folder below"))
        else:
            raise ReportTableError(f"{path}: no such file or folder")
    covered = {p.parent for p in explicit}  # a run given by file uses that file
    search.reports.extend(explicit.values())
    search.reports.extend(
        newest_report(files) for folder, files in runs.items() if folder not in covered
    )
    search.missing = list(dict.fromkeys(search.missing))
    return search


def _walk(root: Path) -> tuple[dict[Path, list[Path]], list[tuple[Path, str]]]:
    """``({run folder: report files}, [(untested run folder, reason)])`` at and below ``root``."""
    found: dict[Path, list[Path]] = {}
    untested: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        reports = sorted(f for f in files if REPORT_FILE.fullmatch(f))
        here = Path(folder)
        if reports:
            found[here] = [here / f for f in reports]
        elif "checkpoints" in dirs:
            untested.append((here, "checkpoints but no report*.json (not tested yet?)"))
    return found, untested


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Run:
    """One report, read.

    Attributes:
        path: the report file.
        metrics: its float metrics (``acc``, ``ece``, ``ece_ts``, ..., ``temperature``).
        config: its composed config.
    """

    path: Path
    metrics: dict[str, float]
    config: dict[str, Any]

    @property
    def seed(self) -> Any:
        """``seed_everything`` of the config (None when absent)."""
        return self.config.get("seed_everything")

    @property
    def loss_class(self) -> str:
        """The class path of the loss (torch's cross-entropy when the config names none)."""
        loss = (self.config.get("model") or {}).get("loss")
        if isinstance(loss, dict) and loss.get("class_path"):
            return str(loss["class_path"])
        if isinstance(loss, str) and loss:
            return loss
        return "torch.nn.CrossEntropyLoss"

    @property
    def task(self) -> str:
        """``"segmentation"`` when the report has ``miou``, else ``"classification"``."""
        return "segmentation" if "miou" in self.metrics else "classification"

    @property
    def dataset(self) -> str | None:
        """The datamodule class name without ``DataModule`` (None when the config has none)."""
        data = self.config.get("data")
        path = data.get("class_path") if isinstance(data, dict) else None
        if not path:
            return None
        name = str(path).rsplit(".", 1)[-1]
        return name.removesuffix("DataModule") or name


def load_report(path: str | os.PathLike) -> Run:
    """Read one report file.

    Raises:
        ReportTableError: the file cannot be read, is not JSON, or has no ``metrics``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ReportTableError(f"{path}: cannot read the report ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise ReportTableError(f"{path}: not a lightning-calib report (no 'metrics')")
    metrics = {
        str(key): float(value)
        for key, value in data["metrics"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    config = data.get("config")
    return Run(path, metrics, config if isinstance(config, dict) else {})


def method_name(class_path: str) -> str:
    """The short name of a loss class (:data:`METHODS`); an unknown class keeps its name.

    Example:
        >>> method_name("losses.LabelSmoothing"), method_name("my.losses.Fancy")
        ('LS', 'Fancy')
    """
    name = class_path.rsplit(".", 1)[-1]
    return METHODS.get(name, name)


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` of a nested config; lists holding dicts are flattened by index.

    Example:
        >>> flatten_config({"model": {"loss": {"init_args": {"alpha": 0.1}}}, "x": [1, 2]})
        {'model.loss.init_args.alpha': 0.1, 'x': [1, 2]}
    """
    items: Iterable[tuple[Any, Any]] | None = None
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = enumerate(value)
    if items is None:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(flatten_config(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def settings(config: dict[str, Any]) -> dict[str, str]:
    """The flattened config without :data:`IGNORED_KEYS`, each value as canonical JSON.

    A ``class_path`` under ``__main__.`` (what runs started as ``python -m
    lightning_calib.cli`` saved before that was fixed) is read as ``lightning_calib.cli.``,
    so such runs group with the same runs started otherwise.
    """
    out = {}
    for key, value in flatten_config(config).items():
        if any(pattern.fullmatch(key) for pattern in IGNORED_KEYS):
            continue
        if key.endswith("class_path") and isinstance(value, str) and value.startswith("__main__."):
            value = "lightning_calib.cli." + value.removeprefix("__main__.")
        out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


# --------------------------------------------------------------------------- grouping


@dataclass
class Group:
    """Runs of one setting (configs equal but for the seed and the run folder): one row.

    Attributes:
        runs: the runs, in the order found.
        method: the short loss name.
        label: the row name (``method``, with the keys that tell it from its namesakes).
        settings: the canonical settings the runs share (see :func:`settings`).
    """

    runs: list[Run]
    method: str
    label: str
    settings: dict[str, str]

    @property
    def n(self) -> int:
        """The number of runs."""
        return len(self.runs)

    @property
    def task(self) -> str:
        """``"segmentation"`` when any run reports ``miou``, else ``"classification"``."""
        segmentation = any(r.task == "segmentation" for r in self.runs)
        return "segmentation" if segmentation else "classification"

    @property
    def dataset(self) -> str | None:
        """The dataset name of the runs (see :attr:`Run.dataset`)."""
        return self.runs[0].dataset

    def stats(self, key: str) -> tuple[float, float | None] | None:
        """``(mean, sample std or None for one run)`` of a metric; None unless every run has it."""
        values = [run.metrics.get(key) for run in self.runs]
        if any(v is None for v in values):
            return None
        numbers = [float(v) for v in values if v is not None]
        std = statistics.stdev(numbers) if len(numbers) > 1 else None
        return statistics.mean(numbers), std


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group runs by setting and name the groups (see the module docstring).

    Returns:
        The groups in table order: task, dataset (as first found), method (:data:`METHODS`
        order, unknown losses last), then the order found.
    """
    by_setting: dict[tuple[tuple[str, str], ...], list[Run]] = {}
    for run in runs:
        by_setting.setdefault(tuple(sorted(settings(run.config).items())), []).append(run)
    groups = [
        Group(members, method_name(members[0].loss_class), "", dict(key))
        for key, members in by_setting.items()
    ]
    namesakes: dict[tuple[str, str | None, str], list[Group]] = {}
    for group in groups:
        namesakes.setdefault((group.task, group.dataset, group.method), []).append(group)
    for same in namesakes.values():
        for group, label in zip(same, _labels(same), strict=True):
            group.label = label
    datasets = list(dict.fromkeys(g.dataset for g in groups))
    groups.sort(
        key=lambda g: (
            g.task != "classification",
            datasets.index(g.dataset),
            _METHOD_RANK.get(g.method, len(_METHOD_RANK)),
            g.method,
        )
    )  # stable: rows of one method stay in the order their first run was found
    return groups


def _labels(groups: Sequence[Group]) -> list[str]:
    """Labels of groups that share a method: the fewest differing keys that tell them apart."""
    method = groups[0].method
    if len(groups) == 1:
        return [method]
    keys = list(dict.fromkeys(k for g in groups for k in g.settings))
    differing = [k for k in keys if len({g.settings.get(k) for g in groups}) > 1]
    # a class that differs explains its init_args: name the class, not each argument
    classes = {k.removesuffix("class_path") for k in differing if k.endswith(".class_path")}
    differing = [
        k for k in differing if not any(k.startswith(f"{c}init_args.") for c in classes)
    ] or differing

    def priority(key: str) -> int:
        return next(
            (i for i, prefix in enumerate(_LABEL_PRIORITY) if key.startswith(prefix)),
            len(_LABEL_PRIORITY),
        )

    differing.sort(key=priority)  # stable: config order within a priority
    for count in range(1, len(differing) + 1):
        for short in (True, False):
            labels = [_label(method, g, differing[:count], short) for g in groups]
            if len(set(labels)) == len(labels):
                return labels
    return [_label(method, g, differing, False) for g in groups]


def _label(method: str, group: Group, keys: Sequence[str], short: bool) -> str:
    names = _short_keys(keys)
    parts = []
    for key in keys:
        raw = group.settings.get(key)
        value = "unset" if raw is None else json.loads(raw)
        if short and key.endswith("class_path") and isinstance(value, str):
            value = value.rsplit(".", 1)[-1]
        shown = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{names[key]}={shown}")
    return f"{method} ({', '.join(parts)})" if parts else method


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key (``init_args``/``class_path`` left out), unique."""
    parts = {
        k: [p for p in k.split(".") if p not in ("init_args", "class_path")] or [k] for k in keys
    }
    out = {}
    for key, words in parts.items():
        for size in range(1, len(words) + 1):
            name = ".".join(words[-size:])
            others = (".".join(w[-size:]) for k, w in parts.items() if k != key)
            if name not in others:
                break
        out[key] = name
    return out


# --------------------------------------------------------------------------- the tables


def make_table(
    reports: Iterable[str | os.PathLike],
) -> tuple[list[Group], list[tuple[Path, str]], list[str]]:
    """Read and group reports.

    Args:
        reports: report files.

    Returns:
        ``(groups, unreadable, warnings)``: the rows, ``(file, reason)`` of each report that
        could not be read, and warnings (a seed repeated within a row, a metric some runs of
        a row lack).
    """
    runs, unreadable = [], []
    for path in reports:
        try:
            runs.append(load_report(path))
        except ReportTableError as err:
            unreadable.append((Path(path), str(err).removeprefix(f"{path}: ")))
    groups = group_runs(runs)
    warnings = []
    for group in groups:
        seeded = [r for r in group.runs if isinstance(r.seed, int) and not isinstance(r.seed, bool)]
        seeds = [r.seed for r in seeded]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
            where = ", ".join(str(r.path.parent) for r in seeded if r.seed == seed)
            warnings.append(
                f"{group.label}: seed {seed} in {seeds.count(seed)} runs ({where}); averaged "
                "as separate runs"
            )
        for column in _TASK_COLUMNS[group.task]:
            have = sum(column.key in r.metrics for r in group.runs)
            if 0 < have < group.n:
                warnings.append(
                    f"{group.label}: '{column.key}' is in {have} of {group.n} reports; "
                    f"shown as {_DASH}"
                )
    return groups, unreadable, warnings


def _columns(groups: Sequence[Group], task: str) -> list[Column]:
    return [
        c
        for c in _TASK_COLUMNS[task]
        if not c.optional or any(c.key in r.metrics for g in groups for r in g.runs)
    ]


def _cell(group: Group, column: Column) -> str:
    stats = group.stats(column.key)
    if stats is None:
        return _DASH
    mean, std = stats
    text = f"{mean * column.scale:.{column.digits}f}"
    return text if std is None else f"{text} ± {std * column.scale:.{column.digits}f}"


def _markdown_table(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    widths = [max(3, *(len(r[i]) for r in [header, *rows])) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [":" + "-" * (w - 1) if i < left else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return [line(header), "| " + " | ".join(rule) + " |", *(line(r) for r in rows)]


def render_markdown(groups: Sequence[Group], missing: Sequence[tuple[Path, str]] = ()) -> str:
    """The Markdown tables (one per task), a note on the units and the missing runs.

    Args:
        groups: the rows (:func:`group_runs`).
        missing: ``(path, reason)`` of the runs that are not in the table: a footnote each.
    """
    lines: list[str] = []
    tasks = list(dict.fromkeys(g.task for g in groups))
    for task in tasks:
        rows_of = [g for g in groups if g.task == task]
        if len(tasks) > 1:
            lines += [f"### {task.capitalize()}", ""]
        columns = _columns(rows_of, task)
        with_data = len({g.dataset for g in rows_of}) > 1
        header = (["Data"] if with_data else []) + ["Method", "n"] + [c.header for c in columns]
        rows = [
            ([g.dataset or _DASH] if with_data else [])
            + [g.label, str(g.n)]
            + [_cell(g, c) for c in columns]
            for g in rows_of
        ]
        lines += _markdown_table(header, rows, left=2 if with_data else 1)
        lines.append("")
    percent = "Acc, mIoU and the ECEs" if "segmentation" in tasks else "Acc and the ECEs"
    lines.append(
        f"{percent} in %, NLL in nats; (TS): after temperature scaling with the fitted T. "
        "Mean ± sample standard deviation (ddof=1) over the n runs of a row, which differ "
        f"only in the seed; {_DASH}: not reported."
    )
    if missing:
        lines += ["", "Not in the table:", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in missing]
    return "\n".join(lines) + "\n"


def render_csv(groups: Sequence[Group]) -> str:
    """One CSV row per group: the report's units (fractions), full precision, no ± strings.

    Columns: ``task``, ``dataset``, ``method`` (the row label), ``loss`` (class path), ``n``,
    ``<key>_mean`` and ``<key>_std`` for every metric of the tables' columns (the std empty
    for one run, both empty for a metric a row lacks), and ``reports`` (the report files,
    ``;``-separated).
    """
    tasks = list(dict.fromkeys(g.task for g in groups))
    keys = list(dict.fromkeys(c.key for t in tasks for c in _columns(groups, t)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["task", "dataset", "method", "loss", "n"]
        + [f"{k}_{stat}" for k in keys for stat in ("mean", "std")]
        + ["reports"]
    )
    for g in groups:
        values: list[Any] = []
        for key in keys:
            stats = g.stats(key)
            mean, std = stats if stats is not None else (None, None)
            values += [_number(mean), _number(std)]
        reports = ";".join(str(r.path) for r in g.runs)
        writer.writerow(
            [g.task, g.dataset or "", g.label, g.runs[0].loss_class, g.n, *values, reports]
        )
    return out.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# --------------------------------------------------------------------------- the command


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, as the rest of the CLI's, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"lightning-calib: error: {message}\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lightning-calib report",
        description="One table across the test reports of many runs: a row per setting "
        "(mean ± sample std over its seeds), the metrics raw and after temperature scaling.",
        epilog="A run folder counts with its newest report (give report files by name to use "
        "others). A folder without any report is named on stderr and under the table; the "
        "command fails only when no report at all is found.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_DIR",
        help="a run folder, a report file, or a folder to search for run folders",
    )
    parser.add_argument(
        "--format",
        choices=("markdown", "csv"),
        default="markdown",
        help="markdown (default: values in %% as in papers) or csv (the report's fractions, "
        "mean and std columns, full precision)",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output file"
    )
    return parser


def report_main(argv: Sequence[str], exit_on_error: bool = True) -> int:
    """Run ``lightning-calib report`` (the arguments after ``report``).

    Warnings (missing folders, unreadable reports, repeated seeds) go to stderr, one line
    each; the table to stdout or ``--output`` (written atomically, never over an existing
    file unless ``--overwrite``).

    Args:
        argv: the arguments after ``report``.
        exit_on_error: print a refusal as one line ``lightning-calib: error: ...`` and exit 2;
            ``False`` raises it instead (argparse's own errors always exit 2).

    Returns:
        0 (the table was written).

    Raises:
        ReportTableError: with ``exit_on_error=False``: a path does not exist, no report was
            found, or ``--output`` exists (or cannot be written).
    """
    args = _parser().parse_args(list(argv))
    try:
        return _report(args)
    except ReportTableError as err:
        if not exit_on_error:
            raise
        sys.stderr.write(f"lightning-calib: error: {err}\n")
        sys.exit(2)


def _report(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    if output is not None and output.is_dir():
        raise ReportTableError(f"--output {output}: is a folder")
    if output is not None and output.exists() and not args.overwrite:
        raise ReportTableError(f"--output {output}: exists; pass --overwrite to replace it")
    search = find_reports(args.paths)
    groups, unreadable, warnings = make_table(search.reports)
    missing = [*search.missing, *unreadable]
    if not groups:
        named = "; ".join(f"{path} ({reason})" for path, reason in missing)
        raise ReportTableError(f"no report found: {named}")
    for path, reason in missing:
        sys.stderr.write(f"lightning-calib: warning: not in the table: {path}: {reason}\n")
    for warning in warnings:
        sys.stderr.write(f"lightning-calib: warning: {warning}\n")
    text = render_csv(groups) if args.format == "csv" else render_markdown(groups, missing)
    if output is None:
        sys.stdout.write(text)
        return 0
    data = text.encode()
    if output.exists() and not args.overwrite:  # appeared meanwhile
        raise ReportTableError(f"--output {output}: exists; pass --overwrite to replace it")
    try:
        write_atomic(output, lambda file: file.write(data))
    except OSError as err:
        raise ReportTableError(f"--output {output}: {err.strerror or err}") from err
    print(f"table written to {output}")
    return 0
