"""The ``lightning-calib`` command: LightningCLI with fit / validate / test / predict.

* The model is :class:`~lightning_calib.module.CalibrationModule` (one module for every
  task); its ``network`` and ``loss`` are picked in YAML by ``class_path`` -- the CLI is the
  registry -- and its metric set by ``model.metrics`` (a preset name).
* ``data`` is any :class:`~datamodules.base.CalibrationDataModule`; its ``num_classes``,
  ``ignore_index`` and ``class_names`` class attributes are linked into the model (typed once,
  on the datamodule; the model hands ``ignore_index`` on to the loss and the metrics).
* Configs may build on others with ``__base__`` (see :mod:`lightning_calib.config`). The
  composition happens in memory when the arguments are parsed; ``sys.argv`` is left as the
  user typed it, so DDP ranks re-launched from it compose the same config.
* Every checkpoint also holds the random generators (:class:`~lightning_calib.callbacks.RNGState`),
  so a resumed run draws the shuffles and augmentations the uninterrupted run would have.
* ``test`` writes ``<default_root_dir>/report.json`` (:mod:`lightning_calib.report`: every
  test metric raw and scaled, T, the composed config, the checkpoint, split sizes, version).
* ``predict`` writes the raw and temperature-scaled logits (and the targets) to
  ``<default_root_dir>/predictions.pt`` (:class:`~lightning_calib.callbacks.PredictionWriter`,
  never overwriting) and says where.
* Checkpoints go to a fixed folder ``<trainer.default_root_dir>/checkpoints``: ``best.ckpt``
  (selected by ``checkpoint.monitor``, default ``val/acc``) and ``last.ckpt`` (rewritten every
  epoch, whatever the monitor says), so ``--ckpt_path last`` resumes the newest state.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from datamodules.base import CalibrationDataModule
from lightning_calib.callbacks import MonitorCheck, PredictionWriter, RNGState
from lightning_calib.checkpointing import (
    RunLock,
    RunLockedError,
    check_compatible,
    check_max_epochs,
    check_optimizer_compatible,
    global_rank_from_env,
    install_atomic_checkpoint_io,
    read_checkpoint,
    run_has_checkpoints,
)
from lightning_calib.config import ConfigError, compose, has_bases
from lightning_calib.module import CalibrationModule
from lightning_calib.pictures import TestPictures
from lightning_calib.report import build_report, write_report

__all__ = [
    "TRACEBACK_ENV",
    "CLIError",
    "LastCheckpoint",
    "LightningCalibCLI",
    "console",
    "expand_configs",
    "main",
]

_CONFIG_FLAGS = ("--config", "-c")
#: Set to 1 to see the traceback (and the parser's usage text) instead of one-line errors.
TRACEBACK_ENV = "LIGHTNING_CALIB_TRACEBACK"
_EVAL_SUBCOMMANDS = ("validate", "test", "predict")


class CLIError(ValueError):
    """A command the CLI refuses (it would lose or mix results); reported in one line."""


def _condense_parser_message(message: str) -> str:
    """The informative part of a jsonargparse error, on one line.

    jsonargparse reports a bad value as a tree of the alternatives it tried ("Does not validate
    against any of the Union subtypes ... Expected a <class 'NoneType'> ..."); keep the key,
    the first reason that is not about an alternative nobody meant, and a short given value.
    """
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"Given value: (.*)", message)
    reasons = []
    lines = [raw.strip() for raw in message.splitlines() if raw.strip()]
    for i, line in enumerate(lines):
        if "Problem with given class_path" in line:
            detail = lines[i + 1].lstrip("- ") if i + 1 < len(lines) else ""
            reasons.insert(0, f"{line.lstrip('- ')} {detail}".strip())
        elif line.startswith("- ") and "NoneType" not in line and "Expected a path" not in line:
            reasons.append(line[2:])
    if not reasons:
        return _one_line(message)
    text = (f"{key.group(1)}: " if key else "") + reasons[0]
    if given and len(given.group(1)) <= 80 and "Namespace(" not in given.group(1):
        text += f" (given: {given.group(1).strip()})"
    return _one_line(text)


def _one_line(message: str, limit: int = 600) -> str:
    """Collapse a (possibly multi-line) message into one line of at most ``limit`` chars."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_tracebacks() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0", "false", "False")


class _Parser(LightningArgumentParser):
    """The CLI's parser: a parse error is one line and exit code 2, without the usage dump.

    ``LIGHTNING_CALIB_TRACEBACK=1`` restores jsonargparse's own report (usage + message).
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or _show_tracebacks():
            super().error(message, ex)
        sys.stderr.write(f"lightning-calib: error: {_condense_parser_message(message)}\n")
        sys.exit(2)


class LastCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` at every epoch end, independent of any monitored metric.

    Lightning's ``save_last`` on a monitored checkpoint only rewrites ``last.ckpt`` when the
    monitored value improves; resuming from it would lose epochs. This one has no monitor.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        super().__init__(
            dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
            enable_version_counter=False,
        )  # fmt: skip
        self.CHECKPOINT_NAME_LAST = "last"


class LightningCalibCLI(LightningCLI):
    """LightningCLI with the project's links, checkpoint layout, safety checks and defaults.

    A ``fit`` holds an exclusive lock on its run folder (:class:`RunLock`: released when the
    command ends, dropped by the kernel when the process dies, even killed), checkpoints are
    written atomically beside their target (:class:`AtomicCheckpointIO`), and a checkpoint is
    checked before it is used (readable, same network and class count, same optimizer, epochs
    left to train).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._run_lock: RunLock | None = None
        self._checkpoint: dict[str, Any] | None = None
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._run_lock is not None:
                self._run_lock.release()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:  # noqa: D102
        # The dataset facts are typed once, on the datamodule (class attributes), and linked.
        for fact in ("num_classes", "ignore_index", "class_names"):
            parser.link_arguments(f"data.{fact}", f"model.{fact}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_top_k": 1,
                "checkpoint.enable_version_counter": False,
                "trainer.default_root_dir": "runs/default",
            }
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="fit: replace the checkpoints of the run folder (a fit into a folder that holds "
            "checkpoints is refused otherwise, unless it resumes with --ckpt_path last)",
        )
        parser.add_argument(
            "--allow_random_weights",
            type=bool,
            default=False,
            help="validate/test/predict without --ckpt_path: score the untrained network on "
            "purpose (refused otherwise)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Compose ``__base__`` configs in memory, then parse as LightningCLI does.

        ``sys.argv`` is never rewritten: a DDP launcher that re-runs the command line for the
        other ranks re-runs the user's short command, which composes to the same config.

        Raises:
            ConfigError: a config file (or one of its bases) is missing or malformed.
        """
        if isinstance(args, dict | Namespace):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(
                expand_configs(list(sys.argv[1:] if args is None else args))
            )
        self._check_weights_and_run_folder()  # refusals write nothing, not even a lock file

    def _subconfig(self) -> Namespace:
        sub = self.config.get("subcommand")
        return self.config[sub] if sub else self.config

    def _check_weights_and_run_folder(self) -> None:
        """Refuse what would score random weights or mix two runs in one folder.

        * ``validate``/``test``/``predict`` need ``--ckpt_path`` (or ``--allow_random_weights``).
        * ``--ckpt_path best|last`` is the file in the run's checkpoint folder (found in a new
          process too); a missing one is refused, for ``fit`` as well (nothing to resume).
        * ``fit`` without ``--ckpt_path`` into a folder that holds checkpoints is refused
          unless ``--overwrite true``.
        """
        sub = self.config.get("subcommand")
        if sub is None:
            return
        cfg = self._subconfig()
        ckpt = cfg.get("ckpt_path")
        ckpt_dir = _checkpoint_dir(cfg)
        if ckpt in ("best", "last"):
            path = ckpt_dir / f"{ckpt}.ckpt"
            if not path.is_file():
                what = "nothing to resume" if sub == "fit" else "no trained weights to evaluate"
                raise CLIError(
                    f"--ckpt_path {ckpt}: {path} does not exist ({what}); check "
                    "--trainer.default_root_dir, or give the checkpoint file"
                )
            cfg.ckpt_path = str(path)
        elif ckpt is not None:
            path = Path(ckpt)
            if not path.is_file():
                raise CLIError(f"--ckpt_path {ckpt}: no such checkpoint file")
        elif sub in _EVAL_SUBCOMMANDS and not cfg.get("allow_random_weights"):
            raise CLIError(
                f"{sub} needs the weights to evaluate: pass --ckpt_path (a checkpoint file, "
                "'best' or 'last'); --allow_random_weights true scores the untrained network "
                "on purpose"
            )
        elif sub == "fit" and not cfg.get("overwrite") and _is_launching_process():
            existing = [p.name for p in run_has_checkpoints(ckpt_dir)]
            if existing:
                raise CLIError(
                    f"{ckpt_dir} already holds {', '.join(existing)} of a run: resume it with "
                    "--ckpt_path last, fit into another --trainer.default_root_dir, or pass "
                    "--overwrite true to replace them"
                )

    def _parse_ckpt_path(self) -> None:
        """Load the checkpoint's hyperparameters as LightningCLI does, refusing silent overrides.

        LightningCLI parses the checkpoint's stored hyperparameters over the command's config;
        a value this command sets differently (e.g. a width typed on the command line) would
        be replaced without a word. That is refused, naming the key and both values.
        """
        sub = self.config.get("subcommand")
        if sub is None or not self.config[sub].get("ckpt_path"):
            super()._parse_ckpt_path()
            return
        # a missing, empty, truncated or foreign file: one sentence naming it
        self._checkpoint = read_checkpoint(self.config[sub]["ckpt_path"])
        before = _flatten(self.config[sub]["model"])
        super()._parse_ckpt_path()
        after = _flatten(self.config[sub]["model"])
        for key, value in after.items():
            if key in before and before[key] != value:
                raise CLIError(
                    f"checkpoint {self.config[sub]['ckpt_path']} was trained with "
                    f"model.{key}={value!r} but this command says {before[key]!r} (the "
                    "checkpoint's value would be used silently); use the run's own config, or "
                    "start a new run"
                )

    def before_instantiate_classes(self) -> None:  # noqa: D102
        config = self._subconfig()
        if config["checkpoint"]["dirpath"] is None:
            config["checkpoint"]["dirpath"] = str(_checkpoint_dir(config))
        if config["trainer"].get("logger") in (None, True):
            # the run folder holds its logs and saved config: --trainer.default_root_dir moves all
            config["trainer"]["logger"] = Namespace(
                class_path="pytorch_lightning.loggers.CSVLogger",
                init_args=Namespace(save_dir=str(_run_root(config)), name="logs"),
            )
        callbacks = list(config["trainer"].get("callbacks") or [])
        present = {_class_path(cb).rsplit(".", 1)[-1] for cb in callbacks}
        if "LastCheckpoint" not in present:
            callbacks.append(
                _namespace_callback(LastCheckpoint, dirpath=config["checkpoint"]["dirpath"])
            )
        if "RNGState" not in present:
            callbacks.append(_namespace_callback(RNGState))
        if "MonitorCheck" not in present:
            callbacks.append(_namespace_callback(MonitorCheck))
        if self.subcommand == "test" and "TestPictures" not in present:
            callbacks.append(_namespace_callback(TestPictures))
        if self.subcommand == "predict" and "PredictionWriter" not in present:
            callbacks.append(_namespace_callback(PredictionWriter))
        config["trainer"]["callbacks"] = callbacks

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:  # noqa: D102
        trainer = super().instantiate_trainer(**kwargs)
        # `trainer.checkpoint_callback` (what `ckpt_path="best"` reads) is the first
        # ModelCheckpoint: make it the monitored one, not `last.ckpt`.
        trainer.callbacks.sort(key=lambda cb: isinstance(cb, LastCheckpoint))
        install_atomic_checkpoint_io(trainer)
        return trainer

    def _check_checkpoint(self, resume: bool) -> None:
        """The checkpoint fits this model (and, to resume, this optimizer and ``max_epochs``)."""
        ckpt, self._checkpoint = self._checkpoint, None
        if ckpt is None:
            return
        path = self.config[self.subcommand]["ckpt_path"]
        only = None if resume else ("num_classes", "network")
        check_compatible(
            ckpt, self.model.hparams, self.model.state_dict(), path=path, prefix="model.",
            only=only,
        )  # fmt: skip
        if resume:
            check_optimizer_compatible(ckpt, self.model.hparams.get("optimizer"), path=path)
            check_max_epochs(ckpt, self.trainer.max_epochs, path=path)

    def before_fit(self) -> None:
        """Lock the run folder (after every check that can refuse), then check the checkpoint.

        The lock is taken once the command is known to be valid, so a refused command leaves
        the folder untouched; the run-folder check is repeated under the lock, so two fits
        started together cannot both pass it.
        """
        if _is_launching_process():
            root = _run_root(self._subconfig())
            self._run_lock = RunLock(root, command=" ".join(sys.argv)).acquire()
            self._check_weights_and_run_folder()
        self._check_checkpoint(resume=True)

    def before_validate(self) -> None:  # noqa: D102
        self._check_checkpoint(resume=False)

    def before_test(self) -> None:  # noqa: D102
        self._check_checkpoint(resume=False)

    def before_predict(self) -> None:  # noqa: D102
        self._check_checkpoint(resume=False)

    def after_test(self) -> None:
        """Write ``report.json`` into the run folder (global rank 0; never overwriting)."""
        if not self.trainer.is_global_zero:
            return
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))
        report = build_report(
            self.model, self.datamodule, dumped["test"], self._subconfig().get("ckpt_path")
        )
        pictures = [
            str(Path(p).resolve())
            for cb in self.trainer.callbacks
            for p in getattr(cb, "paths", [])
        ]
        report["pictures"] = pictures
        path = write_report(report, self.trainer.default_root_dir)
        print(f"report written to {path}")


def _run_root(config: Namespace) -> Path:
    """The run folder: ``trainer.default_root_dir`` (``runs/default`` when unset)."""
    return Path(config["trainer"].get("default_root_dir") or "runs/default")


def _checkpoint_dir(config: Namespace) -> Path:
    """The run's checkpoint folder: ``checkpoint.dirpath`` or ``<run folder>/checkpoints``."""
    dirpath = config["checkpoint"].get("dirpath")
    return Path(dirpath) if dirpath else _run_root(config) / "checkpoints"


def _is_launching_process() -> bool:
    """Whether this is global rank 0, as the launchers' environment tells it.

    The process the user started, or rank 0 of ``torchrun``/SLURM; see
    :func:`~lightning_calib.checkpointing.global_rank_from_env`.
    """
    return global_rank_from_env() == 0


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` of a (nested) Namespace / dict."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _class_path(cb: Any) -> str:
    return str(
        getattr(cb, "class_path", None)
        or (cb.get("class_path", "") if isinstance(cb, dict) else "")
    )


def _namespace_callback(cls: type, **init_args: Any) -> Any:
    # run as ``python -m lightning_calib.cli`` this module is ``__main__``: the saved config
    # must name the importable module, or it cannot be read back
    module = "lightning_calib.cli" if cls.__module__ == "__main__" else cls.__module__
    return Namespace(class_path=f"{module}.{cls.__qualname__}", init_args=Namespace(**init_args))


def expand_configs(argv: list[str]) -> list[str]:
    """Replace every ``--config FILE`` that has ``__base__`` by the composed YAML text.

    Raises:
        ConfigError: a config file (or one of its bases) is missing or malformed.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, value = None, None
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            flag, value, i = arg, argv[i + 1], i + 2
        elif arg.startswith("--config="):
            flag, value, i = "--config", arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if "\n" not in value:  # inline YAML (what DDP re-launches other ranks with) stays
            path = Path(value)
            if path.suffix in (".yaml", ".yml") and not path.is_file():
                raise ConfigError(f"config file not found: {path.resolve()}")
            if path.is_file() and path.suffix in (".yaml", ".yml"):
                composed = compose(path)  # also names a YAML error's file and line
                if has_bases(path):
                    value = yaml.safe_dump(composed, sort_keys=False)
        out.extend([flag, value])
    return out


def main(args: list[str] | None = None, run: bool = True) -> LightningCalibCLI | None:
    """Entry point of the ``lightning-calib`` console script.

    From the command line (``args=None``) a mistake -- a config error, a refused command, a
    missing dataset, a bad checkpoint, an invalid value -- is one line on stderr and exit code
    2 (``LIGHTNING_CALIB_TRACEBACK=1`` shows the traceback instead). From Python
    (``args`` given) the exception propagates.

    Args:
        args: command line (default ``sys.argv[1:]``).
        run: run the subcommand (``False`` only instantiates, for tests and notebooks; then
            ``args`` must not contain a subcommand).
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["report"]:  # a table across runs' reports (lightning_calib.report_table)
        from lightning_calib.report_table import report_main

        report_main(argv[1:], exit_on_error=args is None and not _show_tracebacks())
        return None
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return LightningCalibCLI(
            CalibrationModule,
            CalibrationDataModule,
            subclass_mode_data=True,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "yaml", "allow_abbrev": False},
            parser_class=_Parser,
            auto_configure_optimizers=False,
        )
    except (ValueError, OSError, RunLockedError) as err:
        if args is not None or _show_tracebacks():
            raise
        print(
            f"lightning-calib: error: {_condense_parser_message(_describe(err))}", file=sys.stderr
        )
        sys.exit(2)


def _describe(err: BaseException) -> str:
    """The message of an error, with its cause when the message alone names nothing."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return text


def console() -> int:
    """The ``lightning-calib`` console script: run the CLI, exit 0 on success."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(console())
