"""Safe checkpoint writing, checked checkpoint reading and an exclusive lock on a run folder.

What Lightning 2.6 does on its own, and what goes wrong (measured with the installed
``lightning_fabric``/``pytorch_lightning`` 2.6.6 and ``fsspec`` 2026.9):

* :class:`~lightning_fabric.plugins.io.torch_io.TorchCheckpointIO` saves through
  ``lightning_fabric.utilities.cloud_io._atomic_save``: ``torch.save`` into a ``BytesIO``, then
  an ``fsspec`` transaction whose local file is written to ``tempfile.mkstemp()`` -- a file in
  ``$TMPDIR``, not next to the target -- and committed with ``shutil.move``. When ``$TMPDIR``
  is on another filesystem than the run folder, that move is a *copy into the target*: a kill
  during it leaves ``last.ckpt`` truncated, the previous state gone.
* ``_atomic_save`` wraps the write in ``except PermissionError`` and only re-raises for the
  cross-device case: a checkpoint that cannot be written is skipped *silently*, and the run
  goes on and exits 0 with a stale ``last.ckpt``.
* Loading a damaged file gives ``KeyError: 101``, a bare ``EOFError`` or torch's zip error,
  none of which names the file; a checkpoint of another network gives Lightning's dump of
  every missing and unexpected key; an optimizer changed on resume gives ``KeyError: 'step'``.

This module provides:

* :class:`AtomicCheckpointIO` -- a drop-in ``CheckpointIO`` (``Trainer(plugins=[...])`` or
  :func:`install_atomic_checkpoint_io`) that writes next to the target, fsyncs, renames and
  raises :class:`CheckpointSaveError` naming the path on any failure.
* :func:`read_checkpoint` -- loads a checkpoint for inspection and raises one
  :class:`CheckpointError` sentence naming the path for a missing, empty, truncated, corrupt or
  non-Lightning file.
* :func:`check_compatible`, :func:`check_optimizer_compatible`, :func:`check_max_epochs` --
  compare a checkpoint with the run about to use it, before Lightning's own errors would.
* :class:`RunLock` -- an exclusive ``flock`` on ``<run_dir>/.lock`` that the kernel drops when
  the holder dies, even by ``SIGKILL``.
* :func:`run_has_checkpoints` -- the checkpoints already in a folder.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import importlib
import json
import os
import pickle
import shlex
import socket
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec.utils
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH

from lightning_calib.files import write_atomic

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "CheckpointSaveError",
    "RunLock",
    "RunLockedError",
    "check_compatible",
    "check_max_epochs",
    "check_optimizer_compatible",
    "finished_epochs",
    "global_rank_from_env",
    "install_atomic_checkpoint_io",
    "read_checkpoint",
    "run_has_checkpoints",
]

#: The keys every checkpoint written by ``Trainer.save_checkpoint`` holds.
LIGHTNING_KEYS = ("epoch", "pytorch-lightning_version", "state_dict")

_LOCK_NAME = ".lock"


# ------------------------------------------------------------------------------------ errors
class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, damaged, not Lightning's, or not this run's.

    Attributes:
        path: the checkpoint file, where known.
    """

    def __init__(self, message: str, path: _PATH | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; the previous file at the target is untouched.

    Attributes:
        path: the target checkpoint file.
    """

    def __init__(self, message: str, path: _PATH) -> None:
        super().__init__(message)
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.args[0])


class RunLockedError(RuntimeError):
    """Another live process holds the lock of a run folder.

    Attributes:
        run_dir: the locked folder.
        holder: what the holder wrote into the lock file (``pid``, ``host``, ``started``,
            ``command``), or ``{}`` when it had not written it yet.
    """

    def __init__(self, message: str, run_dir: Path, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.holder = holder


def _cause(err: BaseException) -> str:
    """One line describing ``err``: ``[Errno 13] Permission denied`` or ``Type: message``."""
    if isinstance(err, OSError) and err.errno is not None and err.strerror:
        return f"[Errno {err.errno}] {err.strerror}"
    text = str(err).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _name(path: _PATH | None) -> str:
    return "the checkpoint" if path is None else f"checkpoint {path}"


# ------------------------------------------------------------------------------------ saving
class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose save is atomic on the target's filesystem and never silent.

    ``save_checkpoint`` writes ``torch.save`` output to ``.<name>.<pid>.tmp`` in the *target's
    own folder*, flushes and ``os.fsync``s it, ``os.replace``s it onto the target (an atomic
    rename: readers see the old file or the new one, never a part) and fsyncs the folder so
    the rename survives a power loss. On any error the temporary file is removed and
    :class:`CheckpointSaveError` is raised naming the target and the cause, which stops
    ``trainer.fit``.

    What differs from Lightning's ``TorchCheckpointIO.save_checkpoint`` (``_atomic_save``) and
    why:

    * Lightning's temporary file comes from ``tempfile.mkstemp()`` (``$TMPDIR``) and is moved
      with ``shutil.move``; across filesystems that is a copy into the target, so a kill
      during it truncates the target. Here the rename never leaves the folder.
    * Lightning swallows ``PermissionError`` (it only re-raises the cross-device case), so an
      unwritable checkpoint is skipped without a word. Here every error is raised.
    * Lightning never fsyncs; after a power loss the renamed file may be empty or partial.
      Here the file and the folder are fsynced.
    * Lightning serialises into memory first (twice the checkpoint in RAM); here ``torch.save``
      streams into the temporary file.
    * The file gets the usual ``0o666 & ~umask`` mode (``mkstemp`` files are ``0o600``).

    Paths with a non-local ``fsspec`` protocol (``s3://``, ...) are handed to Lightning's
    implementation unchanged. Loading and ``remove_checkpoint`` are Lightning's, except that a
    missing, empty or damaged file raises :class:`CheckpointError` naming it.

    A ``SIGKILL`` during a save leaves the target intact and a stale ``.<name>.<pid>.tmp``
    behind (nothing can remove it); it is overwritten by the next save from a process with the
    same pid and is not matched by ``*.ckpt``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (see the class).

        Args:
            checkpoint: the state Lightning dumps (anything ``torch.save`` accepts).
            path: the target file.
            storage_options: not supported (as in ``TorchCheckpointIO``).

        Raises:
            TypeError: ``storage_options`` was given.
            CheckpointSaveError: the checkpoint could not be written; the target is untouched.
        """
        if storage_options is not None:
            raise TypeError(
                f"`Trainer.save_checkpoint(..., storage_options=...)` is not supported by "
                f"`{type(self).__name__}`."
            )
        if fsspec.utils.get_protocol(str(path)) not in ("file", "local"):
            super().save_checkpoint(checkpoint, path)
            return
        target = Path(str(path).removeprefix("file://"))
        try:
            write_atomic(target, lambda file: torch.save(checkpoint, file))
        except Exception as err:  # KeyboardInterrupt, SystemExit go through as they are
            raise CheckpointSaveError(
                f"cannot write checkpoint {target}: {_cause(err)}", target
            ) from err

    def load_checkpoint(
        self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's load, with a missing/empty/damaged file named in a ``CheckpointError``.

        Args:
            path: the checkpoint file.
            map_location: as for :func:`torch.load` (default: where the tensors were saved).
            weights_only: as for :func:`torch.load`; ``None`` lets Lightning decide.

        Raises:
            CheckpointError: the file is missing, a directory, empty, truncated or corrupt.
        """
        kwargs: dict[str, Any] = {"weights_only": weights_only}
        if map_location is not None:
            kwargs["map_location"] = map_location
        if fsspec.utils.get_protocol(str(path)) not in ("file", "local"):
            return super().load_checkpoint(path, **kwargs)
        local = Path(str(path).removeprefix("file://"))
        _check_file(local)
        try:
            return super().load_checkpoint(local, **kwargs)
        except Exception as err:
            raise _load_error(local, err) from err


def install_atomic_checkpoint_io(trainer: Any) -> bool:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` unless it already has a custom one.

    For a trainer built elsewhere (e.g. by LightningCLI): replaces the default
    ``TorchCheckpointIO`` of ``trainer.strategy``; a user-chosen ``CheckpointIO`` of another
    class (XLA, async, ...) is left alone.

    Args:
        trainer: a ``pytorch_lightning.Trainer``.

    Returns:
        Whether the checkpoint IO was replaced (or already atomic).
    """
    current = trainer.strategy.checkpoint_io
    if isinstance(current, AtomicCheckpointIO):
        return True
    if type(current) is not TorchCheckpointIO:
        return False
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return True


# ----------------------------------------------------------------------------------- reading
def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", path)
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {path} is a directory, not a checkpoint file "
            "(a sharded checkpoint cannot be read here)",
            path,
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): its write never finished", path
        )


def _load_error(path: Path, err: Exception) -> Exception:
    """The error to raise for ``torch.load(path)`` failing with ``err``."""
    if isinstance(err, CheckpointError):
        return err
    if isinstance(err, PermissionError | IsADirectoryError | FileNotFoundError):
        return CheckpointError(f"cannot read checkpoint {path}: {_cause(err)}", path)
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        return CheckpointError(
            f"checkpoint {path} is truncated or corrupt: not a complete torch archive "
            f"({size} bytes; {_cause(err)})",
            path,
        )
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
        return err  # a readable checkpoint holding objects `weights_only=True` refuses
    return CheckpointError(f"checkpoint {path} is corrupt ({_cause(err)})", path)


def read_checkpoint(path: _PATH) -> dict[str, Any]:
    """Load a Lightning checkpoint onto the CPU for inspection or the checks below.

    Loads with ``weights_only=False``: Lightning checkpoints carry hyperparameters (class-path
    dicts, tuples, ...). Only read checkpoints you trust.

    Args:
        path: the checkpoint file.

    Returns:
        The checkpoint dict (``state_dict``, ``epoch``, ``hyper_parameters``, ...).

    Raises:
        CheckpointError: one sentence naming ``path``: it is missing, a directory, empty,
            truncated or corrupt, or not a Lightning checkpoint. The cause is chained.
    """
    path = Path(path)
    _check_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise _load_error(path, err) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint: it holds a {type(checkpoint).__name__}, "
            "not a checkpoint dict",
            path,
        )
    missing = [key for key in LIGHTNING_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint: it lacks "
            + ", ".join(repr(key) for key in missing),
            path,
        )
    return checkpoint


def run_has_checkpoints(ckpt_dir: _PATH) -> list[Path]:
    """The checkpoints (``*.ckpt`` files, or sharded ``*.ckpt`` folders) in ``ckpt_dir``.

    Temporary files of :class:`AtomicCheckpointIO` (``.<name>.<pid>.tmp``) are not counted.

    Args:
        ckpt_dir: a checkpoint folder; it may not exist.

    Returns:
        The checkpoints, sorted by name; empty when there are none or the folder is missing.
    """
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.ckpt") if not p.name.startswith("."))


# ---------------------------------------------------------------------------------- checking
_ABSENT = object()


def _plain(value: Any) -> Any:
    """Normalise for comparison: mappings to dicts, tuples/lists to lists, Namespaces to dicts."""
    if hasattr(value, "as_dict") and callable(value.as_dict):  # jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _differences(old: Any, new: Any, key: str) -> Iterator[tuple[str, Any, Any]]:
    """The differing leaves of two normalised values, in ``old``'s key order, then ``new``'s."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in list(old) + [k for k in new if k not in old]:
            sub = f"{key}.{name}" if key else name
            yield from _differences(old.get(name, _ABSENT), new.get(name, _ABSENT), sub)
    elif not _equal(old, new):
        yield key, old, new


def _equal(a: Any, b: Any) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # objects whose == does not give a truth value
        return a is b


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def check_compatible(
    checkpoint: Mapping[str, Any],
    model_hparams: Mapping[str, Any],
    model_state: Mapping[str, Any],
    *,
    path: _PATH | None = None,
    prefix: str = "",
    ignore: Iterable[str] = (),
    only: Iterable[str] | None = None,
    strict: bool = True,
) -> None:
    """Refuse a checkpoint made for another model, naming the first difference.

    First the checkpoint's ``hyper_parameters`` against ``model_hparams``, nested mappings by
    dotted path in the checkpoint's order, tuples and lists alike (a YAML round trip turns one
    into the other); top-level keys starting with ``_`` (``_instantiator``) are skipped, and
    so is a checkpoint without hyperparameters. Then, when those agree, the state-dict shapes.

    Args:
        checkpoint: from :func:`read_checkpoint`.
        model_hparams: the hyperparameters of the model about to load it (``model.hparams``).
        model_state: parameter name -> shape (or tensor: ``model.state_dict()`` will do).
        path: the checkpoint file, for the message.
        prefix: put before every hyperparameter name in the message (the CLI passes
            ``"model."`` so that the names are the command-line flags).
        ignore: dotted hyperparameter names (without ``prefix``) not to compare; a name also
            covers everything below it (``"optimizer"`` skips ``optimizer.init_args.lr``).
        only: if given, compare just these dotted names (and what is below them), e.g.
            ``("num_classes", "network")`` for evaluating a checkpoint, where the optimizer
            or loss it was trained with does not matter.
        strict: also refuse parameters present on one side only (as Lightning's strict
            loading does).

    Raises:
        CheckpointError: e.g. ``checkpoint runs/x/last.ckpt was trained with num_classes=10;
            this run has num_classes=100``, or ``checkpoint ... holds network.fc.weight with
            shape (10, 16); this model has (100, 16)``.
    """
    skip = tuple(ignore)
    keep = None if only is None else tuple(only)

    def under(key: str, names: tuple[str, ...]) -> bool:
        return any(key == n or key.startswith(n + ".") for n in names)

    def ignored(key: str) -> bool:
        return under(key, skip) or (keep is not None and not under(key, keep))

    stored = checkpoint.get("hyper_parameters")
    if isinstance(stored, Mapping):
        old = {k: v for k, v in _plain(stored).items() if not k.startswith("_")}
        new = {k: v for k, v in _plain(model_hparams).items() if not k.startswith("_")}
        for key, was, now in _differences(old, new, ""):
            if ignored(key):
                continue
            shown = prefix + key
            trained = f"without {shown}" if was is _ABSENT else f"with {shown}={was!r}"
            has = f"has no {shown}" if now is _ABSENT else f"has {shown}={now!r}"
            raise CheckpointError(f"{_name(path)} was trained {trained}; this run {has}", path)

    saved = checkpoint.get("state_dict") or {}
    for name, value in model_state.items():
        if name not in saved:
            if strict:
                raise CheckpointError(
                    f"{_name(path)} has no parameter {name}, which this model has", path
                )
            continue
        mine, theirs = _shape(value), _shape(saved[name])
        if mine != theirs:
            raise CheckpointError(
                f"{_name(path)} holds {name} with shape {theirs}; this model has {mine}", path
            )
    if strict:
        for name in saved:
            if name not in model_state:
                raise CheckpointError(
                    f"{_name(path)} holds parameter {name}, which this model does not have", path
                )


def _optimizer_name(optimizer: Any) -> str | None:
    if optimizer is None:
        return None
    if isinstance(optimizer, str):
        return optimizer
    class_path = (
        optimizer.get("class_path")
        if isinstance(optimizer, Mapping)
        else getattr(optimizer, "class_path", None)
    )
    if isinstance(class_path, str):
        return class_path
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


def _same_class(a: str, b: str) -> bool:
    """Whether two class paths (or bare class names) name one class."""
    if a == b:
        return True
    if "." not in a or "." not in b:
        return a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1]
    resolved = [_resolve(a), _resolve(b)]
    return resolved[0] is not None and resolved[0] is resolved[1]


def _resolve(class_path: str) -> Any:
    """The object ``class_path`` names (``torch.optim.SGD``), or ``None``."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:
        return None


def check_optimizer_compatible(
    checkpoint: Mapping[str, Any], optimizer: Any, *, path: _PATH | None = None
) -> None:
    """Refuse to resume with another optimizer class than the checkpoint was trained with.

    Lightning restores the optimizer state into whatever ``configure_optimizers`` builds; for
    another class that fails deep inside (``KeyError: 'step'`` for SGD state into Adam).

    The checkpoint's class is ``hyper_parameters["optimizer"]`` (a ``class_path`` dict, as the
    CLI stores it). When that is absent and ``optimizer`` is an optimizer instance, the keys
    of the saved parameter groups are compared with the instance's instead (SGD has
    ``momentum``, Adam ``betas``).

    Args:
        checkpoint: from :func:`read_checkpoint`.
        optimizer: the optimizer of this run: a class path or class name, a ``class_path``
            dict or Namespace, a class, or an instance. ``None`` checks nothing.
        path: the checkpoint file, for the message.

    Raises:
        CheckpointError: naming both optimizers.
    """
    current = _optimizer_name(optimizer)
    if current is None:
        return
    hparams = checkpoint.get("hyper_parameters")
    stored = _optimizer_name(hparams.get("optimizer")) if isinstance(hparams, Mapping) else None
    if stored is not None:
        if not _same_class(stored, current):
            raise CheckpointError(
                f"{_name(path)} was trained with optimizer {stored}; this run uses {current}: "
                "a resumed run must keep the optimizer (start a new run to change it)",
                path,
            )
        return
    states = checkpoint.get("optimizer_states") or []
    if isinstance(optimizer, torch.optim.Optimizer) and states:
        saved_groups = states[0].get("param_groups") or [{}]
        saved_keys = set(saved_groups[0]) - {"params"}
        keys = set(optimizer.param_groups[0]) - {"params"}
        if saved_keys and keys != saved_keys:
            raise CheckpointError(
                f"{_name(path)} holds the state of another optimizer than this run's {current} "
                f"(its parameter groups have {', '.join(sorted(saved_keys - keys))}): a "
                "resumed run must keep the optimizer",
                path,
            )


def finished_epochs(checkpoint: Mapping[str, Any]) -> int:
    """How many training epochs the run had finished when ``checkpoint`` was written.

    Lightning stores ``epoch`` as the 0-based index of the epoch being run (for ``last.ckpt``
    written at an epoch end: of the epoch just finished, so 1 after two epochs), and the fit
    loop's ``epoch_progress.current.processed`` as the number of epochs whose training part
    ended. The latter also counts right for a checkpoint written mid-epoch (``epoch`` 1,
    ``processed`` 1: epoch 1 still has batches to run), so it is used when present; without
    loop state, ``epoch + 1``.

    Args:
        checkpoint: from :func:`read_checkpoint`.

    Returns:
        The number of finished epochs.
    """
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(progress["processed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1


def check_max_epochs(
    checkpoint: Mapping[str, Any], max_epochs: int | None, *, path: _PATH | None = None
) -> None:
    """Refuse a resume whose ``max_epochs`` leaves nothing to train.

    Lightning itself "resumes" such a run, trains nothing and exits 0. The rule: refuse when
    ``max_epochs`` is set (not ``None``/``-1``) and ``max_epochs <=``
    :func:`finished_epochs`; so ``max_epochs=3`` proceeds after 2 finished epochs and is
    refused after 3.

    Args:
        checkpoint: from :func:`read_checkpoint`.
        max_epochs: the ``max_epochs`` of this run (``None`` or ``-1``: no limit set).
        path: the checkpoint file, for the message.

    Raises:
        CheckpointError: naming the finished epochs and ``max_epochs``.
    """
    if max_epochs is None or max_epochs == -1:
        return
    done = finished_epochs(checkpoint)
    if done >= max_epochs:
        raise CheckpointError(
            f"{_name(path)} has already finished {done} epoch{'s' * (done != 1)} and this run "
            f"has max_epochs={max_epochs}, so resuming would train nothing (raise max_epochs "
            f"above {done})",
            path,
        )


# ----------------------------------------------------------------------------------- locking
def global_rank_from_env() -> int:
    """This process's global rank as the launchers' environment tells it, before any setup.

    ``RANK`` (torchrun) when set; else Lightning's DDP launcher marks the processes it starts
    with ``LOCAL_RANK`` (and multi-node runs with ``NODE_RANK``): any of those non-zero gives
    a non-zero rank; else ``SLURM_PROCID``; else 0.

    Returns:
        The rank (0 for a plain single process).
    """
    env = os.environ
    if env.get("RANK") is not None:
        return int(env["RANK"])
    local, node = env.get("LOCAL_RANK"), env.get("NODE_RANK", env.get("GROUP_RANK"))
    if local is not None or node is not None:
        return int(local or 0) + int(node or 0)  # 0 only when both are 0
    for key in ("SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if env.get(key) is not None:
            return int(env[key])
    return 0


class RunLock:
    """An exclusive lock on a run folder that a killed process never leaves stuck.

    ``acquire`` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<run_dir>/.lock`` and writes the
    holder's pid, host, start time and command into it (JSON) for the message another process
    gets. The kernel drops a ``flock`` when the last descriptor of the open file closes --
    also when the process is killed by ``SIGKILL`` -- so a stale file never blocks; its
    leftover contents are overwritten by the next holder. ``release`` empties the file and
    unlocks; the file itself stays (unlinking a lock file races with a process about to lock
    it).

    The lock lasts until ``release`` (or the ``with`` block's end) or the process's exit;
    dropping the ``RunLock`` object does not release it.

    Notes:
        * ``flock`` locks belong to the open file, not the process: two ``RunLock`` objects
          exclude each other even in one process; a child ``fork``ed while the lock is held
          (DataLoader workers) shares it until it exits.
        * DDP ranks are separate processes and would lock each other out: only global rank 0
          may take the lock (the caller decides; :func:`global_rank_from_env` tells the rank
          before the trainer has set up).
        * On NFS, Linux emulates ``flock`` with POSIX byte-range locks, which work across
          clients with NFSv4; some network filesystems have no locking (``ENOLCK``), which
          ``acquire`` raises as ``OSError``.

    Args:
        run_dir: the run folder (created if missing).
        command: recorded as the holder's command (default: ``sys.argv``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp, RunLock(tmp) as lock:
        ...     lock.held
        True
    """

    def __init__(self, run_dir: _PATH, command: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / _LOCK_NAME
        self.command = command if command is not None else shlex.join(sys.argv)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise at once if another live process holds it.

        Returns:
            ``self``. Acquiring a lock this object already holds is a no-op.

        Raises:
            RunLockedError: another process (or another ``RunLock``) holds it; the message
                names the folder and the holder's pid, host, start time and command.
            OSError: the folder cannot be created or the filesystem cannot lock.
        """
        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            holder = _read_holder(fd)
            os.close(fd)
            message = _locked_message(self.run_dir, holder)
            raise RunLockedError(message, self.run_dir, holder) from err
        except OSError as err:
            os.close(fd)
            raise OSError(
                err.errno, f"cannot lock run folder {self.run_dir}: {err.strerror}"
            ) from err
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.command,
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info, indent=1) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)  # drops the lock
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and drop the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 65536, 0)
        holder = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _locked_message(run_dir: Path, holder: Mapping[str, Any]) -> str:
    if not holder:
        who = "another process (it has not written its details yet)"
    else:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        if holder.get("started"):
            who += f" since {holder['started']}"
        if holder.get("command"):
            who += f" running `{holder['command']}`"
    return (
        f"run folder {run_dir} is in use by {who}; wait for that run to end or use another folder"
    )
