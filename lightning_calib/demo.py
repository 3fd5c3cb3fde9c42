"""The main job on embedded data: train each loss on both tasks, test, print the comparisons.

``python -m lightning_calib.demo`` (``make demo``) trains the shipped ``configs/digits/*.yaml``
(classification) and then ``configs/digits_voc/*.yaml`` (segmentation) runs through the same
CLI a user types (``lightning-calib fit`` then ``test`` on the best checkpoint) and prints, per
task, test accuracy (mIoU and pixel accuracy), NLL, ECE, AECE, CECE (and the image-wise ECE)
before and after temperature scaling (values x100, as papers print them). Each table is also
written to ``<out>/<task>/summary.json`` and ``summary.md``, and the reliability diagrams of
all runs to ``<out>/<task>/reliability.png``.

While it trains, each run shows one status line (``[2/9] ls  epoch 12/30  val/acc 0.981
8.4 s``), rewritten in place on a terminal and written once, when the run ends, otherwise
(a pipe, a file, CI). Lightning's own chatter (device and seed lines, tips, checkpoint
restoring) is kept out of the demo's output by :func:`quiet_lightning`; warnings and errors
other than the few known, harmless ones still show.

Trainer/model/data overrides are passed on to every run, e.g. ``python -m lightning_calib.demo
--losses ce acls --trainer.limit_train_batches=2``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
from torch import Tensor

from lightning_calib.cli import main as cli_main
from lightning_calib.pictures import plot_reliability_grid

__all__ = [
    "DEFAULT_LOSSES",
    "TASKS",
    "DemoTask",
    "RunProgress",
    "format_table",
    "plot_reliability_grid",
    "quiet_lightning",
    "run_demo",
    "train_and_test",
]

# Every loss of the ACLS paper's comparison, baselines first, ACLS last.
DEFAULT_LOSSES = ("ce", "ls", "focal", "flsd", "ecp", "mmce", "mbls", "cpc", "acls")
COLUMNS = (
    ("acc", "Acc"),
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("aece", "AECE"),
    ("cece", "CECE"),
    ("ece_ts", "ECE (TS)"),
    ("aece_ts", "AECE (TS)"),
    ("cece_ts", "CECE (TS)"),
    ("temperature", "T"),
)
#: Columns of the segmentation table (pixel-wise pooled metrics, and the image-wise ECE).
SEG_COLUMNS = (
    ("miou", "mIoU"),
    ("acc", "Pixel acc"),
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("aece", "AECE"),
    ("cece", "CECE"),
    ("image_ece", "Image ECE"),
    ("ece_ts", "ECE (TS)"),
    ("image_ece_ts", "Image ECE (TS)"),
    ("temperature", "T"),
)
RELIABILITY_FILE = "reliability.png"


@dataclass(frozen=True)
class DemoTask:
    """One half of the demo: a folder of configs, its table columns and its selection key."""

    configs: str
    columns: tuple[tuple[str, str], ...]
    monitor: str
    title: str
    losses: tuple[str, ...] = DEFAULT_LOSSES


#: The two tasks of the demo, in the order they run.
TASKS = {
    "digits": DemoTask(
        "digits", COLUMNS, "val/acc",
        "Digits test split (540 images), best-val-accuracy checkpoint, values x100:",
    ),
    "digits_voc": DemoTask(
        "digits_voc", SEG_COLUMNS, "val/miou",
        "digits-VOC test split (200 images of 64x64, 11 classes), best-val-mIoU checkpoint, "
        "pooled over every valid pixel (Image ECE: mean over images), values x100:",
        # CE against the two margin losses, within the demo's time (every loss has a config)
        ("ce", "mbls", "acls"),
    ),
}  # fmt: skip

# The `logging` loggers of Lightning (standalone packages and the unified `lightning` package).
# Their INFO lines are the "Seed set to 0", "GPU available", "💡 Tip: ... litlogger",
# "`Trainer.fit` stopped", "Restoring states from the checkpoint" messages.
LIGHTNING_LOGGERS = (
    "pytorch_lightning",
    "lightning.pytorch",
    "lightning_fabric",
    "lightning.fabric",
)
# Warnings the demo knows to be harmless (message regex, category).
_KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # the CLI adds a second ModelCheckpoint (last.ckpt) and sorts the monitored one first, so
    # `ckpt_path="best"` reads best.ckpt (see LightningCalibCLI.instantiate_trainer)
    (r".*called with Trainer configured with multiple `ModelCheckpoint` callbacks", UserWarning),
    # torch's pytree deprecation, raised from inside pytorch_lightning
    (r".*isinstance\(treespec, LeafSpec\)", FutureWarning),
)
# Command-line overrides the demo passes on to every run.
_PASS_THROUGH = ("--trainer.", "--model.", "--data.", "--checkpoint.", "--seed_everything")


def config_dir() -> Path:
    """The shipped ``configs/`` folder (beside the packages in a checkout)."""
    here = Path(__file__).resolve().parents[1] / "configs"
    return here if here.is_dir() else Path("configs")


@contextlib.contextmanager
def quiet_lightning(level: int = logging.WARNING) -> Iterator[None]:
    """Silence Lightning's INFO lines and the known harmless warnings, inside the block only.

    * The ``pytorch_lightning`` / ``lightning_fabric`` (and ``lightning.*``) loggers are set to
      ``level`` (never lowered), which drops their ``rank_zero_info`` lines -- the litlogger
      and litmodels tips among them: Lightning prints those through this logger and has no
      switch of its own for them. Their previous levels are restored on exit.
    * Warning filters for the messages in ``_KNOWN_WARNINGS`` only, inside
      :class:`warnings.catch_warnings`, which restores the filters on exit.

    Warnings, errors and exceptions of every other kind go through as before.
    """
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    saved = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for message, category in _KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        try:
            for lg in loggers:
                lg.setLevel(max(level, lg.getEffectiveLevel()))
            yield
        finally:
            for lg, old in zip(loggers, saved):
                lg.setLevel(old)


class RunProgress(pl.Callback):
    r"""One status line per run: ``[i/n] loss  epoch e/N  val/acc x  t s``.

    On a terminal the line is rewritten in place (``\r``) while the run trains; on anything
    else (a pipe, a file, CI) nothing is written until :meth:`close` writes the final line.

    Args:
        name: the run's name (the loss).
        index: 1-based position of the run.
        total: number of runs.
        width: pad ``name`` to this many characters (to align the lines of several runs).
        stream: where to write; ``None`` for the current ``sys.stdout``.
        tty: rewrite the line in place; ``None`` to ask ``stream.isatty()``.
        interval: the fewest seconds between two rewrites within an epoch.
        start: ``time.perf_counter()`` value the elapsed time counts from (default: now).
        monitor: the validation key shown (``val/acc``; ``val/miou`` for segmentation).
    """

    def __init__(
        self,
        name: str,
        index: int = 1,
        total: int = 1,
        *,
        width: int = 0,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        interval: float = 0.25,
        start: float | None = None,
        monitor: str = "val/acc",
    ) -> None:
        self.label = f"[{index}/{total}] {name:<{width}}"
        self.monitor = monitor
        self._stream = stream
        self._tty = tty
        self.interval = interval
        self.start = time.perf_counter() if start is None else start
        self.epoch = 0
        self.max_epochs: int | None = None
        self.val_acc: float | None = None
        self.status = ""
        self.closed = False
        self._last_draw = -math.inf
        self._drawn = 0

    @property
    def stream(self) -> IO[str]:  # noqa: D102
        return sys.stdout if self._stream is None else self._stream

    @property
    def tty(self) -> bool:
        """Whether the line is rewritten in place."""
        if self._tty is not None:
            return self._tty
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def line(self) -> str:
        """The status line as it reads now."""
        n = self.max_epochs if self.max_epochs is not None and self.max_epochs >= 0 else "?"
        parts = [self.label, f"epoch {self.epoch}/{n}"]
        if self.val_acc is not None:
            parts.append(f"{self.monitor} {self.val_acc:.3f}")
        if self.status:
            parts.append(self.status)
        parts.append(f"{time.perf_counter() - self.start:.1f} s")
        return "  ".join(parts)

    def draw(self, force: bool = False) -> None:
        """Rewrite the line on a terminal (at most every ``interval`` s unless ``force``)."""
        if self.closed or not self.tty:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        text = self.line()
        self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
        self.stream.flush()
        self._drawn = len(text)

    def close(self, status: str = "") -> None:
        """Write the final line (once), ending it with a newline."""
        if self.closed:
            return
        self.status = status
        text = self.line()
        prefix = "\r" if self.tty and self._drawn else ""
        self.stream.write(prefix + text + " " * max(0, self._drawn - len(text)) + "\n")
        self.stream.flush()
        self.closed = True

    def _read_val_acc(self, trainer: pl.Trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self.val_acc = float(value)

    # --- Lightning hooks ---------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self.max_epochs = trainer.max_epochs
        self.status = ""
        self.draw(force=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self.epoch = trainer.current_epoch + 1
        self.draw(force=True)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        self.draw()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        # after the epoch-level metrics reached `callback_metrics` (not so in *_epoch_end)
        if not trainer.sanity_checking:
            self._read_val_acc(trainer)
            self.draw(force=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self._read_val_acc(trainer)
        self.draw(force=True)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self.status = "testing the best checkpoint"
        self.draw(force=True)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self.status = ""

    def on_exception(  # noqa: D102
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.close(f"failed: {type(exception).__name__}")


def _fit_and_test(
    config: Path, out: Path, extra: list[str], callbacks: Sequence[pl.Callback] = ()
) -> tuple[dict[str, float], dict[str, dict[str, Tensor]]]:
    """Fit one config, test its best checkpoint; the ``test/`` metrics and reliability data."""
    root = out / config.stem
    args = [
        "--config", str(config),
        f"--trainer.default_root_dir={root}",
        *extra,
    ]  # fmt: skip
    cli = cli_main(args, run=False)
    assert cli is not None
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = cli.trainer.test(
        cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False
    )
    metrics = {k.removeprefix("test/"): float(v) for k, v in results[0].items()}
    reliability = dict(getattr(cli.model, "test_reliability", {}) or {})
    return metrics, reliability


def train_and_test(
    config: Path, out: Path, extra: list[str], callbacks: Sequence[pl.Callback] = ()
) -> dict[str, float]:
    """Fit one config, then test its best checkpoint; return the ``test/`` metrics.

    ``callbacks`` are added to the trainer the config builds (e.g. a :class:`RunProgress`).
    """
    return _fit_and_test(config, out, extra, callbacks)[0]


def format_table(
    rows: dict[str, dict[str, float]], columns: Sequence[tuple[str, str]] = COLUMNS
) -> str:
    """A Markdown table: one row per loss, metrics x100 (temperature as is)."""
    head = "| loss | " + " | ".join(title for _, title in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    lines = [head, sep]
    for name, m in rows.items():
        cells = []
        for key, _ in columns:
            v = m.get(key)
            cells.append(
                "-" if v is None else f"{v:.2f}" if key == "temperature" else f"{100 * v:.2f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(
    losses: tuple[str, ...] = DEFAULT_LOSSES,
    out: str | Path = "runs/demo",
    extra: list[str] | None = None,
    *,
    progress: bool = True,
    quiet: bool = True,
    plot: bool = True,
    stream: IO[str] | None = None,
    task: str = "digits",
) -> dict[str, dict[str, float]]:
    """Train and test each loss's config of one task; write and return the summary.

    Args:
        losses: names of ``configs/<task>/<name>.yaml``.
        out: output folder (one sub-folder per run, ``summary.json``, ``summary.md``,
            ``reliability.png``).
        extra: CLI overrides passed to every run (``--trainer.max_epochs=2``, ...).
        progress: show one :class:`RunProgress` line per run on ``stream``.
        quiet: keep Lightning's INFO lines and known warnings out (:func:`quiet_lightning`).
        plot: write the reliability diagrams of all runs to ``<out>/reliability.png``.
        stream: where the progress lines go (default: ``sys.stdout``).
        task: a key of :data:`TASKS` (``"digits"``, ``"digits_voc"``).
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {sorted(TASKS)}; got {task!r}.")
    spec = TASKS[task]
    out = Path(out)
    configs = config_dir() / spec.configs
    paths = {name: configs / f"{name}.yaml" for name in losses}
    for path in paths.values():
        if not path.is_file():
            known = sorted(p.stem for p in configs.glob("*.yaml") if not p.stem.startswith("_"))
            raise FileNotFoundError(f"no config {path}; known losses: {', '.join(known)}")
    out.mkdir(parents=True, exist_ok=True)
    if plot:
        (out / RELIABILITY_FILE).unlink(missing_ok=True)  # never report a stale image
    rows: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[str, dict[str, Tensor]]] = {}
    width = max((len(name) for name in losses), default=0)
    with quiet_lightning() if quiet else contextlib.nullcontext(), warnings.catch_warnings():
        if quiet:
            # a rerun writes into its own run folders again, by design (best.ckpt is replaced)
            warnings.filterwarnings(
                "ignore",
                message=rf"Checkpoint directory {re.escape(str(out))}.* exists and is not empty",
            )
        for i, (name, path) in enumerate(paths.items(), 1):
            start = time.perf_counter()
            callbacks: list[pl.Callback] = []
            bar = None
            if progress:
                bar = RunProgress(
                    name, i, len(paths), width=width, stream=stream, start=start,
                    monitor=spec.monitor,
                )  # fmt: skip
                callbacks.append(bar)
            rows[name], curves[name] = _fit_and_test(path, out, list(extra or []), callbacks)
            rows[name]["seconds"] = time.perf_counter() - start
            if bar is not None:
                key = spec.monitor.removeprefix("val/")
                value = rows[name].get(key)
                bar.close("" if value is None else f"test/{key} {value:.3f}")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    (out / "summary.md").write_text(format_table(rows, spec.columns) + "\n")
    if plot and any(curves.values()):
        plot_reliability_grid(
            curves, rows, out / RELIABILITY_FILE,
            suptitle=f"{spec.configs} test split, best checkpoint: raw (bars) and "
            "temperature-scaled (TS)",
        )  # fmt: skip
    return rows


def _parse(argv: list[str] | None) -> tuple[Any, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other --trainer.*, --model.*, --data.*, --checkpoint.* arguments are passed on "
        "to every run (e.g. --trainer.limit_train_batches=2).",
    )
    parser.add_argument(
        "--losses",
        nargs="+",
        default=None,
        help="configs/<task>/<name>.yaml to run (default: every loss for digits; ce mbls acls "
        "for digits_voc)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=list(TASKS),
        default=list(TASKS),
        help="the embedded tasks to run, in order (default: %(default)s)",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (one per task)")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the epochs")
    args, rest = parser.parse_known_args(argv)
    overrides: list[str] = []
    for arg in rest:
        takes_value = bool(overrides) and "=" not in overrides[-1] and overrides[-1][:2] == "--"
        if arg.startswith(_PASS_THROUGH) or (takes_value and not arg.startswith("-")):
            overrides.append(arg)
        else:
            parser.error(f"unrecognized arguments: {arg}")
    return args, overrides


def main(argv: list[str] | None = None) -> None:
    """Console entry point of the demo: each task's runs, then its table."""
    args, overrides = _parse(argv)
    extra = [] if args.max_epochs is None else [f"--trainer.max_epochs={args.max_epochs}"]
    extra += overrides
    start = time.perf_counter()
    total = 0
    for task in args.tasks:
        spec = TASKS[task]
        losses = tuple(args.losses) if args.losses else spec.losses
        n = len(losses)
        out = Path(args.out) / task
        print(
            f"Training {n} loss{'es' if n != 1 else ''} on the embedded {task} data "
            f"(configs/{spec.configs}/<loss>.yaml), then testing each best checkpoint "
            f"({spec.monitor}):",
            flush=True,
        )
        rows = run_demo(losses, out, extra, task=task)
        total += len(rows)
        print()
        print(spec.title)
        print(format_table(rows, spec.columns))
        print("(The last digits move at float rounding from one CPU to another.)")
        print(f"Table in {out}/summary.md", end="")
        image = out / RELIABILITY_FILE
        print(f"; reliability diagrams in {image}" if image.is_file() else "")
        print()
    print(f"{total} runs in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
