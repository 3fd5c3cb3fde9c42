"""``PredictionWriter``: ``predict`` writes one file in the run folder and says where."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import pytorch_lightning as pl
import torch
from conftest import REPO
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_calib.callbacks import PredictionWriter
from lightning_calib.module import CalibrationModule

N, K, BATCH = 10, 3, 4  # three batches: 4, 4, 2


class Data(pl.LightningDataModule):
    """A predict loader over fixed tensors; ``y=None`` gives batches without targets."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        super().__init__()
        self.x, self.y = x, y

    def predict_dataloader(self) -> DataLoader:
        data = self.x if self.y is None else TensorDataset(self.x, self.y)
        return DataLoader(data, batch_size=BATCH)


def classification_data(with_target: bool = True) -> Data:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 4, generator=gen)
    y = torch.randint(0, K, (N,), generator=gen)
    return Data(x, y if with_target else None)


def dense_data() -> Data:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 2, 5, 6, generator=gen)
    y = torch.randint(0, K, (N, 5, 6), generator=gen)
    return Data(x, y)


def make_model(dense: bool = False, temperature: float = 2.5) -> CalibrationModule:
    torch.manual_seed(0)

    def network(num_classes: int) -> nn.Module:
        return nn.Conv2d(2, num_classes, 1) if dense else nn.Linear(4, num_classes)

    model = CalibrationModule(
        network=network,
        num_classes=K,
        loss=nn.CrossEntropyLoss(),
        metrics="segmentation" if dense else "classification",
    )
    model.temperature.fill_(temperature)
    return model


def predict(model, data, writer, root, progress_bar=False):
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        callbacks=[writer],
    )
    assert trainer.predict(model, datamodule=data, return_predictions=False) is None
    return trainer


def load(path):
    return torch.load(path, weights_only=True)


def check_file(saved, model, data, temperature):
    with torch.no_grad():
        expected = model(data.x)
    assert saved["logits"].shape == (N, K, *data.x.shape[2:])
    torch.testing.assert_close(saved["logits"], expected)
    assert torch.equal(saved["logits_ts"], saved["logits"] / saved["temperature"])
    assert saved["temperature"].item() == temperature
    assert torch.equal(saved["batch_indices"], torch.arange(N))
    if data.y is None:
        assert "target" not in saved
    else:
        assert torch.equal(saved["target"], data.y)
    assert all(v.device.type == "cpu" for v in saved.values())


@pytest.mark.parametrize("dense", [False, True], ids=["classification", "dense"])
def test_predict_writes_the_outputs_and_says_where(tmp_path, capsys, dense):
    model, data = make_model(dense), dense_data() if dense else classification_data()
    writer = PredictionWriter(tmp_path)
    predict(model, data, writer, tmp_path / "root")
    path = tmp_path / "predictions.pt"
    assert writer.paths == [path]
    saved = load(path)
    assert set(saved) == {"logits", "logits_ts", "target", "temperature", "batch_indices"}
    check_file(saved, model, data, 2.5)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "predictions written" in ln]
    assert lines == [f"predictions written to {path} ({N} rows)"]
    assert [p for p in os.listdir(tmp_path) if p != "root"] == ["predictions.pt"]  # no temp file


def test_batches_without_target_give_no_target_key(tmp_path):
    model, data = make_model(), classification_data(with_target=False)
    predict(model, data, PredictionWriter(tmp_path), tmp_path)
    saved = load(tmp_path / "predictions.pt")
    assert set(saved) == {"logits", "logits_ts", "temperature", "batch_indices"}
    check_file(saved, model, data, 2.5)


def test_a_second_predict_never_overwrites(tmp_path, capsys):
    data = classification_data()
    predict(make_model(temperature=2.5), data, PredictionWriter(tmp_path), tmp_path)
    first = (tmp_path / "predictions.pt").read_bytes()
    capsys.readouterr()

    model = make_model(temperature=0.5)
    writer = PredictionWriter(tmp_path)
    predict(model, data, writer, tmp_path)
    second = tmp_path / "predictions-1.pt"
    assert writer.paths == [second]
    assert (tmp_path / "predictions.pt").read_bytes() == first  # untouched
    check_file(load(tmp_path / "predictions.pt"), model, data, 2.5)
    check_file(load(second), model, data, 0.5)
    out = capsys.readouterr().out
    assert f"predictions written to {second} ({N} rows)" in out
    assert "predictions.pt was taken in that folder, nothing was overwritten" in out

    predict(model, data, PredictionWriter(tmp_path), tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "predictions-1.pt",
        "predictions-2.pt",
        "predictions.pt",
    ]


def test_output_dir_defaults_to_the_run_folder_and_filename_is_used(tmp_path, capsys):
    root = tmp_path / "runs" / "x"
    predict(make_model(), classification_data(), PredictionWriter(filename="out.pt"), root)
    assert (root / "out.pt").is_file()
    assert f"predictions written to {root / 'out.pt'} ({N} rows)" in capsys.readouterr().out


def test_the_line_goes_through_the_progress_bar(tmp_path, capsys):
    predict(make_model(), classification_data(), PredictionWriter(tmp_path), tmp_path, True)
    out = capsys.readouterr().out
    assert f"predictions written to {tmp_path / 'predictions.pt'} ({N} rows)" in out


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        predict(make_model(), classification_data(), PredictionWriter(tmp_path / "out"), tmp_path)
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["", "a/b.pt", "..", "."])
def test_filename_must_be_a_plain_file_name(name):
    with pytest.raises(ValueError, match="`filename` must be a file name"):
        PredictionWriter(filename=name)


DDP_SCRIPT = """
import sys, warnings
sys.path[:0] = [{repo!r}, {tests!r}]
warnings.filterwarnings("ignore")
import pytorch_lightning as pl
from test_predict_writer import classification_data, make_model
from lightning_calib.callbacks import PredictionWriter

trainer = pl.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
    enable_model_summary=False, enable_progress_bar=False,
    callbacks=[PredictionWriter({out!r})],
)
trainer.predict(make_model(), datamodule=classification_data(), return_predictions=False)
"""


@pytest.mark.slow
def test_ddp_writes_one_file_per_rank_and_never_overwrites(tmp_path):
    """Two CPU processes, twice: ``predictions.rank<r>.pt``, then ``predictions-1.rank<r>.pt``."""
    out = tmp_path / "out"
    script = tmp_path / "ddp_predict.py"
    script.write_text(
        textwrap.dedent(DDP_SCRIPT).format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out))
    )
    model, data = make_model(), classification_data()
    with torch.no_grad():
        expected = model(data.x)
    for base in ("predictions", "predictions-1"):
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
            timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [ln for ln in proc.stdout.splitlines() if "predictions written" in ln]
        assert len(lines) == 1, proc.stdout  # rank 0 only
        # DistributedSampler: 5 rows per rank, no padding
        assert lines[0].startswith(f"predictions written to {out / base}.rank*.pt ({N} rows)")
        parts = [load(out / f"{base}.rank{r}.pt") for r in range(2)]
        indices = torch.cat([p["batch_indices"] for p in parts])
        assert sorted(indices.tolist()) == list(range(N))
        for part in parts:
            torch.testing.assert_close(part["logits"], expected[part["batch_indices"]])
            assert torch.equal(part["target"], data.y[part["batch_indices"]])
            assert torch.equal(part["logits_ts"], part["logits"] / 2.5)
    assert sorted(os.listdir(out)) == [
        "predictions-1.rank0.pt", "predictions-1.rank1.pt",
        "predictions.rank0.pt", "predictions.rank1.pt",
    ]  # fmt: skip
