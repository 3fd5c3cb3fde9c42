"""The seed-study runner: which runs it plans, that it skips finished ones, that it tables them."""

from __future__ import annotations

import json

import pytest
from conftest import CONFIGS

from lightning_calib import study
from lightning_calib.report import REPORT_NAME


def test_study_plans_every_loss_and_seed_in_order(tmp_path):
    runs = study.study_runs(CONFIGS / "digits_overfit", [0, 1], tmp_path)
    names = [(c.stem, s) for c, s, _ in runs]
    assert len(names) == 18 and ("_base", 0) not in names
    assert names[:2] == [("acls", 0), ("acls", 1)]
    assert runs[0][2] == tmp_path / "acls" / "seed0"
    chosen = study.study_runs(CONFIGS / "digits_overfit", [3], tmp_path, ["ce", "acls"])
    assert [(c.stem, s) for c, s, _ in chosen] == [("ce", 3), ("acls", 3)]
    with pytest.raises(ValueError, match=r"no config for \['nope'\]"):
        study.study_runs(CONFIGS / "digits_overfit", [0], tmp_path, ["nope"])
    with pytest.raises(ValueError, match=r"no <loss>\.yaml config"):
        study.study_runs(tmp_path, [0], tmp_path)


def fake_report(folder, loss_class, seed, ece):
    folder.mkdir(parents=True)
    report = {
        "metrics": {"acc": 0.9, "ece": ece, "nll": 0.3, "temperature": 1.5},
        "config": {"seed_everything": seed, "model": {"loss": {"class_path": loss_class}}},
        "created": "2026-01-01T00:00:00+00:00",
    }
    (folder / REPORT_NAME).write_text(json.dumps(report))


def test_finished_runs_are_skipped_and_tabled(tmp_path, capsys, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "ce.yaml").write_text("model: {}\n")
    out = tmp_path / "runs"
    for seed, ece in ((0, 0.04), (1, 0.06)):
        fake_report(out / "ce" / f"seed{seed}", "losses.CrossEntropy", seed, ece)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "run_one", must_not_run)
    assert study.main([str(configs), "--seeds", "0", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before, skipped") == 2
    assert "| CE " in printed and "5.00 ± 1.41" in printed  # mean ± sample std of 4% and 6%


def test_a_failing_run_is_named_and_the_study_goes_on(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "broken.yaml").write_text("model:\n  no_such_argument: 1\n")
    code = study.main([str(configs), "--seeds", "0", "--out", str(tmp_path / "runs")])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken seed 0: FAILED" in captured.out
    assert "failed: broken seed 0" in captured.err


@pytest.mark.slow
def test_one_real_run_writes_its_report(tmp_path):
    root = tmp_path / "ce" / "seed0"
    extra = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    study.run_one(CONFIGS / "digits" / "ce.yaml", 0, root, extra=extra)
    report = json.loads((root / REPORT_NAME).read_text())
    assert report["config"]["seed_everything"] == 0 and "ece" in report["metrics"]
