"""Files that are either complete or absent: write to a temporary file, fsync, rename.

Anything vertebra writes for later (training checkpoints, model artifacts, predictions, metrics)
can be interrupted at any instant: SIGTERM, Ctrl-C, out of memory, a full disk.  A plain write
interrupted halfway leaves a truncated file in place of the last good one.  So writes go to a
temporary file *in the same directory* (``os.replace`` is only atomic within one file system), are
flushed and fsync'ed, and then replace the target in one step: readers see the old file or the new
one, never a mix.

A process killed between creating its temporary file and renaming it (SIGKILL, power loss) leaves
the temporary behind; nothing else would ever remove it, so each write first removes the stale
temporaries of its own target (:func:`remove_stale_temporaries`).  A temporary's name carries its
writer (``.last.pth.<host>-<pid>.<random>.tmp``), so a live writer's file, a concurrent save into
the same folder, is never touched: only a file whose writer process on this host is gone, or any
other (a writer on another host of a shared file system, a name without a writer) untouched for
:data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import OutputError

__all__ = ["atomic_open", "remove_stale_temporaries", "temporary_prefix", "STALE_AFTER_S", "output_errors",
           "check_output_folder", "describe_write_failure"]

PathLike = str | os.PathLike[str]

# mkstemp creates 0600 files; give the final file the permissions a plain open() would have.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

#: A temporary nobody has written for this long is abandoned, whoever wrote it (no save takes an hour).
STALE_AFTER_S = 3600.0
# Which machine wrote a temporary: pids only mean something on the host that issued them.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_OURS = re.compile(r"(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)\.[a-z0-9_]+\Z")
_UNOWNED = re.compile(r"[a-z0-9_]{8}\Z")     # mkstemp's random part alone (written before names had a writer)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on a clean exit it atomically becomes ``path``.

    If the ``with`` body raises, the temporary file is removed and ``path`` is left untouched,
    so an existing good file is never replaced by a partial one.  ``mode`` must be a write mode
    (``"w"``/``"wb"``); ``kwargs`` go to :func:`open` (e.g. ``encoding="utf-8"``).  A failing
    write (disk full, read-only, a file where the folder should be) is an :class:`OutputError`.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole new file; mode must start with 'w', got {mode!r}")
    target = Path(path)
    directory = target.parent
    with output_errors(target):
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        # mkstemp gives a name nobody else uses, so two writers never clobber each other's temp file.
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=temporary_prefix(target), suffix=".tmp")
    try:
        with output_errors(target):
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


@contextlib.contextmanager
def output_errors(path: PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an :class:`OutputError` naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise describe_write_failure(path, error) from error


def check_output_folder(path: PathLike, *, probe: bool = False) -> Path:
    """Refuse an output folder that cannot be created or written, without creating anything.

    The nearest part of ``path`` that exists must be a folder (not a file); with ``probe`` a file
    is created and removed there, so a read-only or full place fails before hours of work, not
    after.  Nothing lasting is made: a run whose config is then refused leaves no folder behind.
    """
    folder = Path(path)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    with output_errors(folder):
        if existing is not None and not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        if probe and existing is not None:
            fd, name = tempfile.mkstemp(dir=existing, prefix=".vertebra-write-check.", suffix=".tmp")
            os.close(fd)
            os.unlink(name)
    return folder


#: errno -> (what happened, what to do); the rest get the system's own words.
_WRITE_FAILURES = {
    errno.ENOSPC: ("the disk is full", "free some space, or write to another disk (e.g. --out)"),
    errno.EDQUOT: ("the disk quota is used up", "free some space, or write to another disk (e.g. --out)"),
    errno.EROFS: ("the file system is read-only", "write somewhere else (e.g. --out DIR)"),
    errno.EACCES: ("permission denied", "write to a folder you may write to (e.g. --out DIR)"),
    errno.EPERM: ("operation not permitted", "write to a folder you may write to (e.g. --out DIR)"),
    errno.ENOTDIR: ("a file stands where a folder should be", "move that file away or choose another --out"),
    errno.EEXIST: ("a file stands where a folder should be", "move that file away or choose another --out"),
    errno.EISDIR: ("a folder stands where the file should be", "move that folder away or choose another --out"),
}


def describe_write_failure(path: PathLike, error: OSError) -> OutputError:
    """The :class:`OutputError` for ``error`` raised while writing ``path``: what happened and what to do."""
    what, todo = _WRITE_FAILURES.get(error.errno or 0, (error.strerror or type(error).__name__,
                                                        "check the path and the disk, or write elsewhere"))
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    problem = OutputError(f"cannot write {str(path)!r}: {what}{where} [{error.strerror or error}]; {todo}. "
                          f"Nothing was replaced: an existing file there is unchanged")
    problem.errno, problem.strerror, problem.filename = error.errno, error.strerror, str(path)
    return problem


def temporary_prefix(path: PathLike) -> str:
    """``.<name>.<host>-<pid>.``: the start of a temporary's name, which records its writer."""
    return f".{Path(path).name}.{_HOST}-{os.getpid()}."


def remove_stale_temporaries(path: PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the abandoned temporaries :func:`atomic_open` left next to ``path``; returns those removed.

    Only names of ``path``'s own temporaries are considered, and of those only the stale ones
    (module docstring): a writer that is still running keeps its file.  ``suffix``: other writers
    that name their temporaries with :func:`temporary_prefix` (downloads use ``.partial``).
    """
    target = Path(path)
    prefix = f".{target.name}."
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        middle = name[len(prefix):-len(suffix)]
        if not (name.startswith(prefix) and name.endswith(suffix)) or not _is_stale(middle, entry):
            continue
        with contextlib.suppress(OSError):   # another writer's cleanup got there first, or no permission
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _is_stale(middle: str, entry: os.DirEntry) -> bool:
    ours = _OURS.match(middle)
    if ours is None and not _UNOWNED.match(middle):
        return False                           # another target's temporary (``last.pth.bak``) or not ours
    if ours is not None and ours["host"] == _HOST:
        pid = int(ours["pid"])
        if pid == os.getpid():
            return False                       # this process's own write in another thread
        if not _process_alive(pid):
            return True
    try:                                       # a live pid may have been reused; a foreign host's pid means nothing
        return time.time() - entry.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    if os.name == "nt":                        # os.kill(pid, 0) would signal it there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                            # EPERM: alive, another user's
        return True
    return True


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
