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
* Checkpoints go to a fixed folder ``<trainer.default_root_dir>/checkpoints``: ``best.ckpt``
  (selected by ``checkpoint.monitor``, default ``val/acc``) and ``last.ckpt`` (rewritten every
  epoch, whatever the monitor says), so ``--ckpt_path last`` resumes the newest state.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from datamodules.base import CalibrationDataModule
from lightning_calib.callbacks import RNGState
from lightning_calib.config import ConfigError, compose, has_bases
from lightning_calib.module import CalibrationModule

__all__ = ["LastCheckpoint", "LightningCalibCLI", "console", "expand_configs", "main"]

_CONFIG_FLAGS = ("--config", "-c")


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
    """LightningCLI with the project's links, checkpoint layout and defaults."""

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

    def before_instantiate_classes(self) -> None:  # noqa: D102
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config["trainer"]["default_root_dir"] or "runs/default"
        ckpt_dir = str(Path(root) / "checkpoints")
        if config["checkpoint"]["dirpath"] is None:
            config["checkpoint"]["dirpath"] = ckpt_dir
        callbacks = list(config["trainer"].get("callbacks") or [])
        present = {_class_path(cb).rsplit(".", 1)[-1] for cb in callbacks}
        if "LastCheckpoint" not in present:
            callbacks.append(
                _namespace_callback(LastCheckpoint, dirpath=config["checkpoint"]["dirpath"])
            )
        if "RNGState" not in present:
            callbacks.append(_namespace_callback(RNGState))
        config["trainer"]["callbacks"] = callbacks

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:  # noqa: D102
        trainer = super().instantiate_trainer(**kwargs)
        # `trainer.checkpoint_callback` (what `ckpt_path="best"` reads) is the first
        # ModelCheckpoint: make it the monitored one, not `last.ckpt`.
        trainer.callbacks.sort(key=lambda cb: isinstance(cb, LastCheckpoint))
        return trainer


def _class_path(cb: Any) -> str:
    return str(
        getattr(cb, "class_path", None)
        or (cb.get("class_path", "") if isinstance(cb, dict) else "")
    )


def _namespace_callback(cls: type, **init_args: Any) -> Any:
    return Namespace(
        class_path=f"{cls.__module__}.{cls.__qualname__}", init_args=Namespace(**init_args)
    )


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
            if path.is_file() and has_bases(path):
                value = yaml.safe_dump(compose(path), sort_keys=False)
        out.extend([flag, value])
    return out


def main(args: list[str] | None = None, run: bool = True) -> LightningCalibCLI | None:
    """Entry point of the ``lightning-calib`` console script.

    Args:
        args: command line (default ``sys.argv[1:]``).
        run: run the subcommand (``False`` only instantiates, for tests and notebooks; then
            ``args`` must not contain a subcommand).
    """
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
            auto_configure_optimizers=False,
        )
    except ConfigError as err:
        if args is not None:
            raise
        print(f"lightning-calib: error: {err}", file=sys.stderr)
        sys.exit(2)


def console() -> int:
    """The ``lightning-calib`` console script: run the CLI, exit 0 on success."""
    main()
    return 0


if __name__ == "__main__":
    console()
