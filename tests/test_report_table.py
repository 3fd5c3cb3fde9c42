"""``lightning-calib report``: one table across the ``report.json`` of many runs."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO, tiny_trainer_args

from lightning_calib.cli import console, main
from lightning_calib.report_table import (
    ReportTableError,
    find_reports,
    group_runs,
    load_report,
    method_name,
)

DASH = "\u2013"  # what the table shows for a metric a row lacks
CLASSIFICATION_KEYS = ("acc", "top5", "nll", "brier", "ece", "mce", "aece", "cece")


def fake_config(root: Path, loss: str = "losses.ACLS", seed: int = 0, **loss_args) -> dict:
    """A composed config with the structure ``test`` dumps (run-location keys included)."""
    return {
        "seed_everything": seed,
        "trainer": {
            "max_epochs": 100,
            "default_root_dir": str(root),
            "logger": {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": str(root), "name": "logs"},
            },
            "callbacks": [
                {
                    "class_path": "lightning_calib.cli.LastCheckpoint",
                    "init_args": {"dirpath": str(root / "checkpoints")},
                },
                {"class_path": "lightning_calib.callbacks.RNGState", "init_args": {}},
            ],
        },
        "model": {
            "network": {"class_path": "models.ResNet", "init_args": {"depth": 8}},
            "loss": {"class_path": loss, "init_args": {"ignore_index": -100, **loss_args}},
            "metrics": "classification",
            "temperature_grid": [0.1, 10.0, 0.1],
        },
        "data": {"class_path": "datamodules.DigitsDataModule", "init_args": {"batch_size": 64}},
        "checkpoint": {"dirpath": str(root / "checkpoints"), "monitor": "val/acc"},
        "ckpt_path": str(root / "checkpoints" / "best.ckpt"),
        "verbose": True,
    }


def fake_metrics(base: float, temperature: float = 1.5, **override: float) -> dict[str, float]:
    """Every classification key raw and ``_ts``, distinct values derived from ``base``."""
    metrics = {}
    for i, key in enumerate(CLASSIFICATION_KEYS):
        metrics[key] = base + i / 100
        metrics[f"{key}_ts"] = base + i / 100 + 0.001
    metrics["acc_ts"] = metrics["acc"]
    metrics["temperature"] = temperature
    metrics.update(override)
    return metrics


def write_fake_report(
    folder: Path,
    metrics: dict[str, float],
    config: dict | None = None,
    name: str = "report.json",
    created: str = "2024-05-01T12:00:00+00:00",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "metrics": metrics,
        "temperature": metrics.get("temperature"),
        "checkpoint": str(folder / "checkpoints" / "best.ckpt"),
        "config": fake_config(folder) if config is None else config,
        "data": {"class": "DigitsDataModule", "num_classes": 10},
        "version": "0.1.0",
        "git_commit": None,
        "created": created,
    }
    path = folder / name
    path.write_text(json.dumps(report, indent=2))
    return path


def run_report(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``lightning-calib report ARGS`` through the console entry point, in-process."""
    monkeypatch.setattr(sys, "argv", ["lightning-calib", "report", *map(str, args)])
    monkeypatch.delenv("LIGHTNING_CALIB_TRACEBACK", raising=False)
    try:
        code = console()
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def table(markdown: str) -> dict[str, dict[str, str]]:
    """``{row label: {header: cell}}`` of the (first) Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, rows = cells[0], cells[2:]
    label = header.index("Method")
    return {row[label]: dict(zip(header, row, strict=True)) for row in rows}


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


# ------------------------------------------------------------------------- rows and values


def test_two_methods_give_two_rows_with_their_values(tmp_path, capsys, monkeypatch):
    ce = write_fake_report(
        tmp_path / "ce",
        fake_metrics(0.2, temperature=1.7),
        fake_config(tmp_path / "ce", "losses.CrossEntropy"),
    )
    acls = write_fake_report(tmp_path / "acls", fake_metrics(0.3, temperature=1.1, nll=0.43219))
    code, out, err = run_report([tmp_path / "acls", tmp_path / "ce"], capsys, monkeypatch)
    assert code == 0, err
    rows = table(out)
    assert list(rows) == ["CE", "ACLS"]  # the papers' order: the baseline first
    for label, path in (("CE", ce), ("ACLS", acls)):
        metrics = json.loads(path.read_text())["metrics"]
        row = rows[label]
        assert row["n"] == "1"
        assert "±" not in "".join(row.values())  # one run: no spread
        for header, key in (("Acc", "acc"), ("ECE", "ece"), ("AECE", "aece"), ("CECE", "cece")):
            assert row[header] == pct(metrics[key])
            assert row[f"{header} (TS)" if header != "Acc" else "Acc"] == pct(
                metrics[f"{key}_ts" if header != "Acc" else key]
            )
        assert row["NLL"] == f"{metrics['nll']:.3f}"
        assert row["NLL (TS)"] == f"{metrics['nll_ts']:.3f}"
        assert row["T"] == f"{metrics['temperature']:.2f}"
    assert rows["ACLS"]["NLL"] == "0.432"
    assert rows["CE"]["ECE"] == "24.00"  # ece is the 5th key: 0.2 + 0.04
    assert "Data" not in out.splitlines()[0]  # one dataset: no Data column


def test_seeds_of_one_config_give_mean_and_sample_std(tmp_path, capsys, monkeypatch):
    eces, nlls = [0.0312, 0.0275, 0.0351], [0.3012, 0.2874, 0.3333]
    for seed, (ece, nll) in enumerate(zip(eces, nlls, strict=True)):
        root = tmp_path / "acls" / f"seed{seed}"  # the run folders differ as well
        write_fake_report(root, fake_metrics(0.5, ece=ece, nll=nll), fake_config(root, seed=seed))
    code, out, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 0, err
    row = table(out)["ACLS"]
    assert row["n"] == "3"
    ece_mean, ece_std = statistics.mean(eces), statistics.stdev(eces)
    assert row["ECE"] == f"{100 * ece_mean:.2f} ± {100 * ece_std:.2f}"
    assert row["NLL"] == f"{statistics.mean(nlls):.3f} ± {statistics.stdev(nlls):.3f}"
    assert row["T"] == "1.50 ± 0.00"

    code, out, err = run_report([tmp_path, "--format", "csv"], capsys, monkeypatch)
    assert code == 0, err
    (record,) = csv.DictReader(io.StringIO(out))
    assert float(record["ece_mean"]) == ece_mean  # full precision
    assert float(record["ece_std"]) == ece_std
    assert float(record["nll_std"]) == statistics.stdev(nlls)
    assert record["n"] == "3"


def test_same_loss_other_setting_is_its_own_labelled_row(tmp_path, capsys, monkeypatch):
    for alpha in (0.1, 0.2):
        for seed in (0, 1):
            root = tmp_path / f"acls-{alpha}" / str(seed)
            config = fake_config(root, seed=seed, alpha=alpha, margin=10.0)
            write_fake_report(root, fake_metrics(alpha + seed / 100), config)
    code, out, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 0, err
    rows = table(out)
    assert set(rows) == {"ACLS (alpha=0.1)", "ACLS (alpha=0.2)"}
    assert rows["ACLS (alpha=0.1)"]["n"] == rows["ACLS (alpha=0.2)"]["n"] == "2"
    assert rows["ACLS (alpha=0.2)"]["Acc"] == f"{100 * 0.205:.2f} ± {100 * 0.00707107:.2f}"


def test_other_datasets_get_a_data_column(tmp_path, capsys, monkeypatch):
    write_fake_report(tmp_path / "digits", fake_metrics(0.2))
    config = fake_config(tmp_path / "c10")
    config["data"] = {"class_path": "datamodules.CIFAR10DataModule", "init_args": {}}
    write_fake_report(tmp_path / "c10", fake_metrics(0.3), config)
    code, out, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 0, err
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    assert header[:3] == ["Data", "Method", "n"]
    data_rows = [line for line in out.splitlines() if line.startswith("| ") and "ACLS" in line]
    assert [line.split("|")[1].strip() for line in data_rows] == ["CIFAR10", "Digits"]


def test_segmentation_reports_get_the_segmentation_columns(tmp_path, capsys, monkeypatch):
    metrics = {"miou": 0.61, "miou_fg": 0.58, "acc": 0.9, "nll": 0.31, "ece": 0.05}
    metrics |= {"aece": 0.051, "cece": 0.004, "image_ece": 0.07, "ece_ts": 0.02}
    metrics |= {"aece_ts": 0.021, "nll_ts": 0.29, "image_ece_ts": 0.04, "temperature": 1.3}
    config = fake_config(tmp_path / "voc", "losses.MbLS")  # cece_ts left out on purpose
    write_fake_report(tmp_path / "voc", metrics, config)
    code, out, err = run_report([tmp_path / "voc"], capsys, monkeypatch)
    assert code == 0, err
    row = table(out)["MbLS"]
    assert list(row)[2:] == [
        "mIoU", "mIoU (fg)", "Acc", "ECE", "AECE", "CECE", "NLL", "Image ECE",
        "ECE (TS)", "AECE (TS)", "CECE (TS)", "NLL (TS)", "Image ECE (TS)", "T",
    ]  # fmt: skip
    assert (row["mIoU"], row["mIoU (fg)"], row["Image ECE (TS)"]) == ("61.00", "58.00", "4.00")
    assert row["CECE (TS)"] == DASH
    assert row["NLL"] == "0.310"


# ------------------------------------------------------------------------- finding reports


def test_a_folder_without_report_is_named_not_skipped(tmp_path, capsys, monkeypatch):
    write_fake_report(tmp_path / "ce", fake_metrics(0.2))
    (tmp_path / "empty" / "logs").mkdir(parents=True)
    code, out, err = run_report([tmp_path / "ce", tmp_path / "empty"], capsys, monkeypatch)
    assert code == 0  # the other run gives a table
    assert f"warning: not in the table: {tmp_path / 'empty'}" in err
    assert f"`{tmp_path / 'empty'}`" in out.split("Not in the table:")[1]  # the footnote
    assert "ACLS" in table(out)


def test_an_untested_run_below_a_searched_folder_is_named(tmp_path, capsys, monkeypatch):
    write_fake_report(tmp_path / "acls", fake_metrics(0.2))
    (tmp_path / "ls" / "checkpoints").mkdir(parents=True)  # trained, never tested
    code, out, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 0, err
    assert f"{tmp_path / 'ls'}: checkpoints but no report" in err
    assert f"`{tmp_path / 'ls'}`" in out


def test_no_report_at_all_is_an_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, out, err = run_report([tmp_path / "a", tmp_path / "b"], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lightning-calib: error: no report found")
    assert str(tmp_path / "a") in err and str(tmp_path / "b") in err


def test_a_bad_path_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    write_fake_report(tmp_path / "ce", fake_metrics(0.2))
    code, out, err = run_report([tmp_path / "ce", tmp_path / "typo"], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err == f"lightning-calib: error: {tmp_path / 'typo'}: no such file or folder\n"
    # from Python (args given) the error is raised, as for the other commands
    with pytest.raises(ReportTableError, match="no such file"):
        main(["report", str(tmp_path / "typo")])


def test_a_bad_option_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    code, _, err = run_report([tmp_path, "--format", "tex"], capsys, monkeypatch)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("lightning-calib: error: argument --format")


def test_the_command_runs_from_the_shell(tmp_path):
    write_fake_report(tmp_path / "ce", fake_metrics(0.2))
    ok = subprocess.run(
        [sys.executable, "-m", "lightning_calib.cli", "report", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "| ACLS" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lightning_calib.cli", "report", str(tmp_path / "typo")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"lightning-calib: error: {tmp_path / 'typo'}: no such file or folder"
    ]


def test_help(capsys, monkeypatch):
    code, out, _ = run_report(["--help"], capsys, monkeypatch)
    assert code == 0
    assert "usage: lightning-calib report" in out and "--format" in out


def test_a_run_folder_counts_once_with_its_newest_report(tmp_path):
    run = tmp_path / "acls"
    old = write_fake_report(run, fake_metrics(0.1), name="report-1.json", created="2024-01-01")
    new = write_fake_report(run, fake_metrics(0.2), created="2024-06-01T00:00:00+00:00")
    assert find_reports([tmp_path]).reports == [new]  # by `created`, not by the file name
    assert find_reports([run]).reports == [new]
    assert find_reports([old]).reports == [old]  # a file given by name is used
    same = write_fake_report(run, fake_metrics(0.3), name="report-2.json", created="2024-06-01")
    assert find_reports([run]).reports == [same]  # a tie: the later report-N


def test_a_run_given_twice_counts_once(tmp_path):
    path = write_fake_report(tmp_path / "runs" / "acls", fake_metrics(0.2))
    search = find_reports([tmp_path / "runs", tmp_path / "runs" / "acls"])
    assert search.reports == [path] and search.missing == []


def test_an_unreadable_report_is_named(tmp_path, capsys, monkeypatch):
    write_fake_report(tmp_path / "good", fake_metrics(0.2))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "report.json").write_text('{"metrics": {"acc": 0.')
    code, out, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 0
    assert f"not in the table: {tmp_path / 'broken' / 'report.json'}: cannot read" in err
    assert "broken" in out.split("Not in the table:")[1]


def test_a_repeated_seed_is_warned_about(tmp_path, capsys, monkeypatch):
    for name in ("a", "b"):
        write_fake_report(tmp_path / name, fake_metrics(0.2), fake_config(tmp_path / name))
    code, _, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 0
    assert "warning: ACLS: seed 0 in 2 runs" in err


# ------------------------------------------------------------------------- CSV and --output


def test_csv_has_numeric_mean_and_std_columns(tmp_path, capsys, monkeypatch):
    for name, loss, base in (("ce", "CrossEntropy", 0.2), ("ls", "LabelSmoothing", 0.3)):
        config = fake_config(tmp_path / name, f"losses.{loss}")
        write_fake_report(tmp_path / name, fake_metrics(base), config)
    code, out, err = run_report([tmp_path, "--format=csv"], capsys, monkeypatch)
    assert code == 0, err
    records = list(csv.DictReader(io.StringIO(out)))
    keys = ["acc", "ece", "aece", "cece", "nll", "ece_ts", "aece_ts", "cece_ts", "nll_ts"]
    expected = ["task", "dataset", "method", "loss", "n"]
    expected += [f"{k}_{s}" for k in [*keys, "temperature"] for s in ("mean", "std")]
    assert list(records[0]) == [*expected, "reports"]
    assert [r["method"] for r in records] == ["CE", "LS"]
    ls = records[1]
    assert (ls["task"], ls["dataset"], ls["loss"], ls["n"]) == (
        "classification", "Digits", "losses.LabelSmoothing", "1",
    )  # fmt: skip
    values = fake_metrics(0.3)
    for key in keys:
        assert float(ls[f"{key}_mean"]) == values[key]  # fractions, full precision
        assert ls[f"{key}_std"] == ""  # one run
    assert ls["reports"] == str(tmp_path / "ls" / "report.json")
    assert "±" not in out


def test_output_is_written_and_never_overwritten_unless_asked(tmp_path, capsys, monkeypatch):
    write_fake_report(tmp_path / "runs" / "ce", fake_metrics(0.2))
    target = tmp_path / "tables" / "table.md"
    code, out, err = run_report([tmp_path / "runs", "-o", target], capsys, monkeypatch)
    assert code == 0, err
    assert out == f"table written to {target}\n"
    first = target.read_text()
    assert "| ACLS" in first

    write_fake_report(tmp_path / "runs" / "ls", fake_metrics(0.3), fake_config(
        tmp_path / "runs" / "ls", "losses.LabelSmoothing"))  # fmt: skip
    code, out, err = run_report([tmp_path / "runs", "-o", target], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err == (
        f"lightning-calib: error: --output {target}: exists; pass --overwrite to replace it\n"
    )
    assert target.read_text() == first

    code, _, err = run_report(
        [tmp_path / "runs", "-o", target, "--overwrite", "--format", "csv"], capsys, monkeypatch
    )
    assert code == 0, err
    assert target.read_text().startswith("task,dataset,method")
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]  # no temporary left


# ------------------------------------------------------------------------- pieces


def test_method_names():
    assert [method_name(f"losses.{c}") for c in (
        "CrossEntropy", "LabelSmoothing", "FocalLoss", "FLSD", "EntropyPenalty", "MMCE", "CPC",
        "MbLS", "ACLS",
    )] == ["CE", "LS", "FL", "FLSD", "ECP", "MMCE", "CPC", "MbLS", "ACLS"]  # fmt: skip
    assert method_name("torch.nn.CrossEntropyLoss") == "CE"
    assert method_name("my.pkg.NewLoss") == "NewLoss"


def test_every_public_loss_has_a_short_name():
    import losses
    from lightning_calib.report_table import METHODS

    assert set(losses.__all__) - {"CalibrationLoss"} <= set(METHODS)


def test_grouping_ignores_only_the_seed_and_the_run_locations(tmp_path):
    a = fake_config(tmp_path / "a", seed=1)
    b = fake_config(tmp_path / "b", seed=2)
    c = fake_config(tmp_path / "c", seed=3)
    c["data"]["init_args"]["batch_size"] = 128
    runs = [
        load_report(write_fake_report(tmp_path / name, fake_metrics(0.2), cfg))
        for name, cfg in (("a", a), ("b", b), ("c", c))
    ]
    groups = group_runs(runs)  # rows of one method: in the order found
    assert [(g.label, g.n) for g in groups] == [
        ("ACLS (batch_size=64)", 2), ("ACLS (batch_size=128)", 1),
    ]  # fmt: skip
    assert [r.path.parent.name for r in groups[0].runs] == ["a", "b"]
    assert group_runs(runs[::-1])[0].label == "ACLS (batch_size=128)"


def test_a_callback_saved_under_main_groups_with_its_importable_path(tmp_path):
    configs = [fake_config(tmp_path / name, seed=i) for i, name in enumerate("ab")]
    for cfg, module in zip(configs, ("__main__", "lightning_calib.cli")):
        cfg["trainer"]["callbacks"] = [{"class_path": f"{module}.LastCheckpoint"}]
    runs = [
        load_report(write_fake_report(tmp_path / name, fake_metrics(0.2), cfg))
        for name, cfg in zip("ab", configs)
    ]
    assert [g.n for g in group_runs(runs)] == [2]


# ------------------------------------------------------------------------- real reports


def test_reports_of_real_test_runs(tmp_path, capsys, monkeypatch):
    """Two seeds of a digits config, tested with random weights (no fit needed): one row."""
    config = str(CONFIGS / "digits" / "ce.yaml")
    for seed in (0, 1):
        root = tmp_path / "runs" / f"seed{seed}"
        main(["test", "--config", config, *tiny_trainer_args(root), f"--seed_everything={seed}",
              "--allow_random_weights=true"])  # fmt: skip
        assert (root / "report.json").is_file()
    capsys.readouterr()
    code, out, err = run_report([tmp_path / "runs"], capsys, monkeypatch)
    assert code == 0, err
    row = table(out)["CE"]
    assert row["n"] == "2"
    assert DASH not in row.values()  # every column is a key the real report has
    eces = [
        json.loads((tmp_path / "runs" / s / "report.json").read_text())["metrics"]["ece"]
        for s in ("seed0", "seed1")
    ]
    assert row["ECE"] == f"{100 * statistics.mean(eces):.2f} ± {100 * statistics.stdev(eces):.2f}"
