"""Files that are either complete or absent: write to a temporary file, fsync, rename.

Anything vertebra writes for later (training checkpoints, model artifacts, predictions, metrics)
can be interrupted at any instant: SIGTERM, Ctrl-C, out of memory, a full disk.  A plain write
interrupted halfway leaves a truncated file in place of the last good one.  So writes go to a
temporary file *in the same directory* (``os.replace`` is only atomic within one file system), are
flushed and fsync'ed, and then replace the target in one step: readers see the old file or the new
one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open"]

PathLike = str | os.PathLike[str]

# mkstemp creates 0600 files; give the final file the permissions a plain open() would have.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit it atomically becomes ``path``.

    If the ``with`` body raises, the temporary file is removed and ``path`` is left untouched,
    so an existing good file is never replaced by a partial one.  ``mode`` must be a write mode
    (``"w"``/``"wb"``); ``kwargs`` go to :func:`open` (e.g. ``encoding="utf-8"``).
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole new file; mode must start with 'w', got {mode!r}")
    target = Path(path)
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    # mkstemp gives a name nobody else uses, so two writers never clobber each other's temp file.
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (the directory entry); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
