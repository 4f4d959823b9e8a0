"""Files that are either complete or absent: atomic writes and safe checkpoint reads.

A training run can be killed at any instant (SIGTERM, Ctrl-C, out of memory, a full disk).  If it
dies while ``torch.save`` is halfway through ``last.pt``, a plain write leaves a truncated file in
place of the last good checkpoint and ``--resume`` has nothing to resume from.  So every write here
goes to a temporary file *in the same directory* (``os.replace`` is only atomic within one file
system), is flushed and fsync'ed, and then replaces the target in one step: readers see the old
file or the new one, never a mix.

Reads use ``torch.load(weights_only=True)``: a checkpoint is data, and unpickling arbitrary objects
from a file would run arbitrary code.  A corrupt or truncated file becomes a
:class:`~vertebra.errors.CheckpointError` that names the file, not a ``zipfile`` stack trace.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from .errors import CheckpointError

__all__ = ["atomic_open", "save_atomic", "load_checkpoint"]

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


def save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)``, but ``path`` is never left half-written.

    Returns the path written.  Anything ``torch.save`` accepts is accepted; keep checkpoints to
    tensors and plain Python containers so :func:`load_checkpoint` can read them back with
    ``weights_only=True``.
    """
    target = Path(path)
    with atomic_open(target, "wb") as handle:
        torch.save(obj, handle)
    return target


def load_checkpoint(path: PathLike, *, map_location: Any = "cpu",
                    safe_globals: Sequence[Any] = ()) -> Any:
    """Read a checkpoint written by :func:`save_atomic` (or ``torch.save``) without running pickled code.

    Args:
        path: the checkpoint file.
        map_location: where tensors land; CPU by default so a GPU checkpoint opens anywhere.
        safe_globals: extra classes or functions the file may reference (passed to
            ``torch.serialization.safe_globals``), for checkpoints that hold more than tensors
            and builtin containers, e.g. numpy RNG state.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or references objects that are
            not allowed under ``weights_only=True``; the message names the file.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"checkpoint {str(source)!r} does not exist (or is not a file)")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
        raise CheckpointError(_describe_load_failure(source, error)) from error


def _describe_load_failure(path: Path, error: BaseException, *, what: str = "checkpoint",
                           remedy: str = "delete it and use an earlier checkpoint or retrain",
                           allow: str = "load_checkpoint(..., safe_globals=[...])") -> str:
    """Say what is wrong with the file and what to do, keeping torch's reason for the curious.

    Shared with :mod:`vertebra.weights`, which reads weights files the same way.
    """
    text = str(error)
    blocked = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if blocked:
        return (f"{what} {str(path)!r} holds a reference to {blocked.group(1)}, which is not unpickled under "
                f"weights_only=True; save only tensors and plain containers, or, if you trust the file, "
                f"allow the class with {allow}")
    unpickler = re.search(r"WeightsUnpickler error: \s*([^\n]+)", text)
    reason = unpickler.group(1).strip() if unpickler else (_first_sentence(text) or type(error).__name__)
    size = path.stat().st_size if path.exists() else 0
    return (f"{what} {str(path)!r} ({size} bytes) is truncated or corrupt, or not a PyTorch file "
            f"({type(error).__name__}: {reason}); {remedy}")


def _first_sentence(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return text.split(". ")[0].splitlines()[0].rstrip(".") if text else ""


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
