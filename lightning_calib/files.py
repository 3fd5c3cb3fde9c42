"""Writing a run's files: never half-written, never over an earlier one.

* :func:`write_atomic`: write to a temporary file beside the target, flush and fsync it,
  rename it over the target and fsync the folder. A reader (or a kill) sees the old file or
  the new one, never a truncated one; a failed write leaves nothing behind. The temporary file
  is in the target's own folder, so the rename never crosses filesystems (``$TMPDIR`` may be on
  another one, where a "move" is a copy into place).
* :func:`free_stem`: the first of ``stem``, ``stem-1``, ``stem-2``, ... under which nothing is
  written yet, so a second report, picture or prediction file lands beside the first.

Used for checkpoints, predictions, reports and pictures alike.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["free_stem", "fsync_dir", "write_atomic"]


def fsync_dir(folder: Path) -> None:
    """Fsync a folder (makes a rename in it durable); a no-op where folders cannot be fsynced."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on ``.<name>.<pid>.tmp`` beside ``path``, then rename it to ``path``.

    Args:
        path: the target file (its folder is created).
        write: writes the content into the binary file object it is given.

    Returns:
        The target path.

    Raises:
        BaseException: whatever ``write`` or the file system raised; the temporary file is
            removed first and the target is untouched.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target


def free_stem(folder: str | os.PathLike, stem: str, suffix: str) -> str:
    """``stem``, else the first ``stem-<n>`` under which nothing is written yet.

    Taken means ``<stem><suffix>`` exists, or a variant ``<stem>.<anything><suffix>`` (such as
    the per-rank files of one prediction).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> free_stem(folder, "report", ".json")
        'report'
        >>> _ = (folder / "report.json").write_text("{}")
        >>> free_stem(folder, "report", ".json")
        'report-1'
    """
    folder = Path(folder)
    n = 0
    while True:
        base = stem if n == 0 else f"{stem}-{n}"
        if not (folder / (base + suffix)).exists() and not any(folder.glob(f"{base}.*{suffix}")):
            return base
        n += 1
