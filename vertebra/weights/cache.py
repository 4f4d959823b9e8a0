"""The local cache of named checkpoints: where a file lives, how it is verified, how it arrives.

Resolution is offline-first: ``$VERTEBRA_HOME/checkpoints/<entry name>-<url hash>/<file name>``
(default ``~/.cache/vertebra``; :func:`cache_path`) is used when present; otherwise the file is downloaded to a temporary file
next to it and renamed into place only after its hash matches, so the cache never holds a partial
or wrong file.  Without a network (or with ``VERTEBRA_OFFLINE=1``) the error names the exact path
to copy the file to, and the URL to fetch it from elsewhere.  The hash is checked before anything
reads the file.

The cache is keyed per entry, not by the URL's file name: two entries whose URLs both end in
``model.safetensors`` would otherwise share one file, and each would find the other's there
forever (deleting it, as the hash error says, only moves the failure to the other entry).  The
key also holds a hash of the URL, so an entry that moves to a new file gets a fresh place.  The
file name is the URL path's last part, without query or fragment and reduced to safe characters.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..atomic import remove_stale_temporaries, temporary_prefix
from ..errors import WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from .entry import WeightsEntry

__all__ = ["cache_dir", "cache_path", "url_file_name", "sha256_of", "verify_sha256", "resolve", "fetch"]


def cache_dir() -> Path:
    """``$VERTEBRA_HOME`` if set, else ``~/.cache/vertebra``; read on every call so tests can redirect it."""
    home = os.environ.get("VERTEBRA_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "vertebra"


def url_file_name(url: str) -> str:
    """The file name a URL names: its path's last part, no query or fragment, only safe characters."""
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return name if name.strip(".") else "weights"


def cache_path(entry: WeightsEntry) -> Path:
    """Where ``entry``'s file is (or must be placed): ``<cache_dir()>/checkpoints/<name>-<url hash>/<file name>``."""
    without_fragment = urlsplit(entry.url)._replace(fragment="").geturl()
    key = f"{entry.name}-{hashlib.sha256(without_fragment.encode()).hexdigest()[:8]}"
    return cache_dir() / "checkpoints" / key / url_file_name(entry.url)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (a 250 MB checkpoint never sits in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, *, what: str) -> str:
    """Check ``path`` against a full digest or a prefix; returns the full digest."""
    expected = expected.lower()
    digest = sha256_of(path)
    if not digest.startswith(expected):
        kind = "SHA-256 prefix" if len(expected) < 64 else "SHA-256"
        raise WeightsError(f"{what} {str(path)!r} has SHA-256 {digest}, expected {kind} {expected}: "
                           f"the file is incomplete or not the one expected; delete it and fetch it again")
    return digest


def resolve(entry: WeightsEntry, *, download: bool = True, progress: bool = True) -> Path:
    """The verified local file for ``entry``, downloading it into the cache if it is not there yet.

    Raises:
        WeightsError: the cached file has the wrong hash, or it is absent and cannot be downloaded;
            the message names the path to place the file at and the URL to get it from.
    """
    return fetch(entry, download=download, progress=progress)[0]


def fetch(entry: WeightsEntry, *, download: bool = True, progress: bool = True) -> tuple[Path, str]:
    """Like :func:`resolve`, also returning the file's verified SHA-256 (hashed exactly once)."""
    target = entry.path
    _adopt_legacy(entry, target)
    if target.is_file():
        return target, verify_sha256(target, entry.sha256, what=f"cached weights for {entry.name!r}")
    if not download or os.environ.get("VERTEBRA_OFFLINE", "") not in ("", "0"):
        raise WeightsError(_offline_message(entry, target, "downloads are disabled"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(_offline_message(entry, target, f"cannot create the cache directory: {error}")) from error
    remove_stale_temporaries(target, suffix=".partial")     # a download killed halfway left one behind
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=temporary_prefix(target), suffix=".partial")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _download_url(entry.url, str(tmp), progress)
        except Exception as error:  # URLError, HTTPError, OSError, timeouts ...
            raise WeightsError(_offline_message(entry, target, f"download failed: {error}")) from error
        digest = verify_sha256(tmp, entry.sha256,
                               what=f"downloaded weights for {entry.name!r} from {entry.url}, saved as")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target, digest


def _adopt_legacy(entry: WeightsEntry, target: Path) -> None:
    """Move a file from the old flat layout (``checkpoints/<URL file name>``) into place, if it is this entry's.

    Only a file with this entry's hash moves: under the old layout another entry may own it.
    """
    legacy = cache_dir() / "checkpoints" / entry.url.rstrip("/").rsplit("/", 1)[-1]
    if target.exists() or not legacy.is_file():
        return
    try:
        if sha256_of(legacy).startswith(entry.sha256.lower()):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(legacy, target)
    except OSError:  # unreadable or read-only: resolve as if it were not there
        pass


def _download_url(url: str, destination: str, progress: bool) -> None:
    """Fetch ``url`` into ``destination`` (the one function tests replace to stay offline)."""
    import torch.hub

    torch.hub.download_url_to_file(url, destination, hash_prefix=None, progress=progress)


def _offline_message(entry: WeightsEntry, target: Path, reason: str) -> str:
    return (f"weights {entry.name!r} are not in the cache and could not be fetched ({reason}). "
            f"Download {entry.url} on a machine with network access and place it at {str(target)!r} "
            f"(the cache is $VERTEBRA_HOME, default ~/.cache/vertebra), or pass the file's path as weights=")

