"""The main job on embedded data: train each loss on digits, test, print the comparison.

``python -m lightning_calib.demo`` (``make demo``) trains the shipped ``configs/digits/*.yaml``
runs through the same CLI a user types (``lightning-calib fit`` then ``test`` on the best
checkpoint) and prints, side by side, test accuracy, NLL, ECE, AECE and CECE before and
after temperature scaling (values x100, as papers print them). The table is also written to
``<out>/summary.json`` and ``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lightning_calib.cli import main as cli_main

__all__ = ["DEFAULT_LOSSES", "format_table", "run_demo"]

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


def config_dir() -> Path:
    """The shipped ``configs/`` folder (beside the packages in a checkout)."""
    here = Path(__file__).resolve().parents[1] / "configs"
    return here if here.is_dir() else Path("configs")


def train_and_test(config: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """Fit one config, then test its best checkpoint; return the ``test/`` metrics."""
    root = out / config.stem
    args = [
        "--config", str(config),
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        *extra,
    ]  # fmt: skip
    cli = cli_main(args, run=False)
    assert cli is not None
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    results = cli.trainer.test(
        cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False
    )
    return {k.removeprefix("test/"): float(v) for k, v in results[0].items()}


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per loss, metrics x100 (temperature as is)."""
    head = "| loss | " + " | ".join(title for _, title in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for name, m in rows.items():
        cells = []
        for key, _ in COLUMNS:
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
) -> dict[str, dict[str, float]]:
    """Train and test each loss's digits config; write and return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = config_dir() / "digits"
    rows: dict[str, dict[str, float]] = {}
    for name in losses:
        path = configs / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in configs.glob("*.yaml") if not p.stem.startswith("_"))
            raise FileNotFoundError(f"no config {path}; known losses: {', '.join(known)}")
        start = time.perf_counter()
        rows[name] = train_and_test(path, out, list(extra or []))
        rows[name]["seconds"] = time.perf_counter() - start
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    (out / "summary.md").write_text(format_table(rows) + "\n")
    return rows


def _parse(argv: list[str] | None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--losses",
        nargs="+",
        default=list(DEFAULT_LOSSES),
        help="configs/digits/<name>.yaml to run (default: %(default)s)",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--max-epochs", type=int, default=None, help="override the epochs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Console entry point of the demo."""
    args = _parse(argv)
    extra = [] if args.max_epochs is None else [f"--trainer.max_epochs={args.max_epochs}"]
    start = time.perf_counter()
    rows = run_demo(tuple(args.losses), args.out, extra)
    print()
    print("Digits test split (540 images), best-val-accuracy checkpoint, values x100:")
    print(format_table(rows))
    print(
        f"\n{len(rows)} runs in {time.perf_counter() - start:.0f} s; table in {args.out}/summary.md"
    )


if __name__ == "__main__":
    main()
