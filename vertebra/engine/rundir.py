"""The run folder (``--out``): one run at a time, and a finished run is never overwritten by accident.

Three rules, checked by :func:`claim_run_folder` before anything is written there:

* a folder that already holds something (other than the generated ``data`` set, which a new run
  reuses as it is) belongs to an earlier run: a new run into it is refused unless it ``resume``\\ s
  that run or says ``overwrite``.  Overwriting removes the files a run writes (the names the
  training loop passes in: checkpoints, artifact, log, PNGs), so no stale ``best.pth`` or log line
  passes for the new run's, and nothing else: ``--out .`` with ``--overwrite`` never empties a
  working directory;
* a lock file, ``run.lock``, records who is using the folder (host, pid, start time), so two runs
  cannot interleave their logs and checkpoints.  It is created in one step (written to a temporary
  file and hard-linked into place, which fails if the lock exists), so a reader never sees half a
  lock.  A lock whose process is gone (same host, pid no longer alive) is stale: it is taken over
  with a warning.  A lock from another host cannot be checked, so it holds until removed by hand;
* the lock is released (removed) when the run ends, however it ends.

Under DDP only rank 0 claims the folder (the other ranks write nothing there); the others refuse a
used folder too (:func:`refuse_used_folder`), so a refused run stops on every rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..atomic import _process_alive, output_errors, temporary_prefix
from ..errors import OutputError

__all__ = ["LOCK_NAME", "KEPT_ENTRIES", "claim_run_folder", "refuse_used_folder", "read_lock", "previous_run_entries"]

LOCK_NAME = "run.lock"
#: Entries a new run may find in its folder without it counting as used: the shapes set generated
#: into ``<out>/data`` (regenerating it would write the same bytes) and the lock (judged on its own).
KEPT_ENTRIES = frozenset({"data", LOCK_NAME})


def previous_run_entries(folder: Path) -> list[str]:
    """The names in ``folder`` that make it an earlier run's folder (empty for a new or fresh one)."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.name not in KEPT_ENTRIES and not entry.name.startswith(".vertebra-write-check."))


def read_lock(folder: Path) -> dict | None:
    """The lock's record (``host``, ``pid``, ``started``), ``{}`` for an unreadable one, None when absent."""
    try:
        text = (folder / LOCK_NAME).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


@contextlib.contextmanager
def claim_run_folder(folder: Path, outputs: Iterable[str], *, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``folder`` for one run (module docstring); the lock is removed when the block ends.

    ``outputs``: the names of the files a run writes there, what ``overwrite`` removes.
    """
    _take_lock(folder)
    try:
        used = refuse_used_folder(folder, resume=resume, overwrite=overwrite)
        if used and not resume:
            names = set(outputs)
            _remove_previous_run(folder, [name for name in used if name in names])
        yield
    finally:
        _release_lock(folder)


def refuse_used_folder(folder: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """Refuse an earlier run's folder unless ``resume`` or ``overwrite``; returns what it holds.

    Changes nothing, so the ranks that do not claim the folder (DDP ranks other than 0) call it too
    and stop with rank 0 instead of waiting for it at the rendezvous.
    """
    used = previous_run_entries(folder)
    if used and not (resume or overwrite):
        shown = ", ".join(used[:5]) + (", ..." if len(used) > 5 else "")
        raise OutputError(f"{str(folder)!r} already holds a run ({shown}); continue it with --resume, "
                          f"replace it with --overwrite, or pass another --out")
    return used


def _take_lock(folder: Path) -> None:
    with output_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(2):       # a second try only after taking over a stale lock
        if _link_new(lock, record):
            return
        holder = read_lock(folder)
        if holder is None:
            continue         # released between our attempt and the read: try again
        if not _is_stale(holder):
            who = (f"process {holder.get('pid')} on {holder.get('host')}" if holder
                   else "another process (the lock is being written or unreadable)")
            raise OutputError(f"{str(folder)!r} is in use by {who} ({lock}); wait for that run to end, "
                              f"pass another --out, or delete {LOCK_NAME} if no run uses the folder")
        warnings.warn(f"{str(lock)!r} was left by process {holder.get('pid')} on this host, which is no longer "
                      f"running; taking the folder over", stacklevel=4)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    if not _link_new(lock, record):
        raise OutputError(f"{str(folder)!r} was claimed by another run while its stale lock was taken over; "
                          f"pass another --out")


def _link_new(lock: Path, record: dict) -> bool:
    """Create ``lock`` holding ``record`` in one step; False when a lock is already there."""
    with output_errors(lock):
        fd, name = tempfile.mkstemp(dir=lock.parent, prefix=temporary_prefix(lock), suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(name, lock)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(name)


def _is_stale(holder: dict) -> bool:
    """A lock of a process on this host that is gone; a lock of another host can't be judged (not stale)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
        return False
    return pid != os.getpid() and not _process_alive(pid)


def _release_lock(folder: Path) -> None:
    holder = read_lock(folder)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            (folder / LOCK_NAME).unlink()


def _remove_previous_run(folder: Path, names: list[str]) -> None:
    """``overwrite``: remove the earlier run's outputs, so none of them passes for the new run's."""
    for name in names:
        path = folder / name
        with output_errors(path):
            path.unlink()
