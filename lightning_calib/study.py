r"""A seed study: every config of a folder trained and tested over several seeds, then tabled.

``python -m lightning_calib.study configs/digits_overfit --seeds 0 1 2 3 4`` runs, for each
``<loss>.yaml`` of the folder (files starting with ``_`` are bases) and each seed,

    lightning-calib fit  --config <loss>.yaml --seed_everything S \
        --trainer.default_root_dir OUT/<loss>/seedS
    lightning-calib test --config <loss>.yaml --seed_everything S \
        --trainer.default_root_dir OUT/<loss>/seedS --ckpt_path best

each in its own process (``OMP_NUM_THREADS`` set to ``--threads``, 1 by default: on a small
shared CPU one thread per run is both faster and reproducible), then prints the table of
:mod:`lightning_calib.report_table` over ``OUT``: mean and sample standard deviation over the
seeds. A run whose folder already holds a ``report.json`` is skipped, so an interrupted study
continues where it stopped; a run that fails is named at the end (exit 1) and never hides the
others.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lightning_calib.report import REPORT_NAME
from lightning_calib.report_table import find_reports, make_table, render_markdown

__all__ = ["main", "run_one", "study_runs"]


def study_runs(
    config_dir: str | Path, seeds: Sequence[int], out: str | Path, losses: Sequence[str] = ()
) -> list[tuple[Path, int, Path]]:
    """``(config, seed, run folder)`` of every run of the study, loss by loss.

    Raises:
        ValueError: the folder holds no config, or a requested loss has none.
    """
    folder = Path(config_dir)
    configs = sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("_"))
    if not configs:
        raise ValueError(f"no <loss>.yaml config in {folder}")
    if losses:
        by_name = {p.stem: p for p in configs}
        unknown = [name for name in losses if name not in by_name]
        if unknown:
            raise ValueError(
                f"`losses`: no config for {unknown} in {folder}; has {sorted(by_name)}"
            )
        configs = [by_name[name] for name in losses]
    return [(c, s, Path(out) / c.stem / f"seed{s}") for c in configs for s in seeds]


def run_one(
    config: Path, seed: int, root: Path, threads: int = 1, extra: Sequence[str] = ()
) -> None:
    """Fit ``config`` with ``seed`` into ``root``, then test its best checkpoint.

    Raises:
        subprocess.CalledProcessError: the fit or the test failed (its stderr is kept).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    common = [
        "--config", str(config),
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]  # fmt: skip
    cli = [sys.executable, "-m", "lightning_calib.cli"]
    fit = [*cli, "fit", *common]
    if (root / "checkpoints").is_dir():  # an interrupted fit: resume it
        fit.append("--ckpt_path=last")
    for command in (fit, [*cli, "test", *common, "--ckpt_path=best"]):
        subprocess.run(command, env=env, check=True, capture_output=True, text=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study (see the module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_calib.study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("config_dir", help="folder of <loss>.yaml configs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--losses", nargs="*", default=[], help="config stems (default: all)")
    parser.add_argument("--out", default=None, help="runs folder (default runs/study/<name>)")
    parser.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out or Path("runs") / "study" / Path(args.config_dir).name)
    try:
        runs = study_runs(args.config_dir, args.seeds, out, args.losses)
    except ValueError as err:
        parser.exit(2, f"lightning-calib study: error: {err}\n")
    failed: list[str] = []
    started = time.perf_counter()
    for i, (config, seed, root) in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {config.stem} seed {seed}"
        if (root / REPORT_NAME).is_file():
            print(f"{label}: done before, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            run_one(config, seed, root, args.threads, extra)
        except subprocess.CalledProcessError as err:
            last = (err.stderr or "").strip().splitlines()[-1:] or ["(no output)"]
            failed.append(f"{config.stem} seed {seed}: {last[0]}")
            print(f"{label}: FAILED: {last[0]}", flush=True)
            continue
        print(f"{label}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"study: {len(runs)} runs in {time.perf_counter() - started:.0f} s\n", flush=True)
    groups = []
    if out.is_dir():
        search = find_reports([out])
        groups, unreadable, _ = make_table(search.reports)
        if groups:
            print(render_markdown(groups, [*search.missing, *unreadable]))
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    return 1 if failed or not groups else 0


if __name__ == "__main__":
    sys.exit(main())
