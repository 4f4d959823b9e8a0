"""A named checkpoint as a value: where to get it, how to check it, which vertebra model it fits.

Plugins construct :class:`WeightsEntry` rows in their ``vertebra_register_weights`` hook, and
``vertebra list --kind weights`` / ``vertebra info`` describe them, both without building a model;
so this module imports no torch (the cache path it names comes from the torch-free :mod:`.cache`).  An entry
refuses itself when built with a value that could never be fetched or checked, so a plugin's typo
fails that plugin at registration rather than a user's download later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .cache import cache_path, url_file_name

__all__ = ["WeightsEntry", "describe_entry"]

_ENTRY_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_]+\Z")  # "<architecture>.<dataset>"
_SHA256 = re.compile(r"[0-9a-f]{8,64}\Z")
_URL_SCHEMES = ("https://", "file://")


@dataclass(frozen=True)
class WeightsEntry:
    """A named checkpoint: where to get it, how to check it, and which vertebra model it fits.

    Attributes:
        name: what users pass as ``weights=``, ``"<architecture>.<dataset>"``.
        url: where the file is downloaded from (``https://`` or ``file://``).
        sha256: expected SHA-256 of the file, lower-case hex; a prefix of the digest when shorter
            than 64 characters (torchvision publishes 8-digit prefixes).
        backbone: the vertebra backbone name whose ``features`` the checkpoint holds.
        head: the vertebra head the full checkpoint fits (``"classifier"``, ``"lraspp"``, ...).
        num_classes: the head's output classes in the checkpoint.
        origin: the torchvision weights enum member it mirrors (for provenance).
        metrics: the published figures, copied from torchvision's metadata.
        head_kwargs: the head options that rebuild the checkpoint's architecture:
            ``registry.build(entry.head, backbone=entry.backbone, **entry.head_kwargs, weights=entry.name)``.
        notes: what the checkpoint was trained on and how it differs from a default build.
        backbone_kwargs: the backbone options the checkpoint was trained with where they differ from
            the backbone's defaults (``{"width_mult": 0.75}``); a model built otherwise is refused
            before anything is fetched.  Build with ``backbone={"name": entry.backbone, **entry.backbone_kwargs}``.
    """

    name: str
    url: str
    sha256: str
    backbone: str
    head: str
    num_classes: int
    origin: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict, compare=False)
    head_kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)
    notes: str = ""
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self._validate()
        # Read-only views: the registered table cannot be edited through an entry.
        for key in ("metrics", "head_kwargs", "backbone_kwargs"):
            object.__setattr__(self, key, MappingProxyType(dict(getattr(self, key))))

    def _validate(self) -> None:
        """Refuse an entry that could never be fetched or checked (a plugin's typo fails its plugin)."""
        where = f"weights entry {self.name!r}"
        if not isinstance(self.name, str) or not _ENTRY_NAME.match(self.name):
            raise ConfigError(f"{where}: the name must be '<architecture>.<dataset>' in lower case, "
                              f"e.g. 'my_net.imagenet'", path="name")
        if not isinstance(self.url, str) or not self.url.startswith(_URL_SCHEMES) or not _names_a_file(self.url):
            raise ConfigError(f"{where}: url must be an https:// or file:// address of a file, got {self.url!r}",
                              path="url")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ConfigError(f"{where}: sha256 must be 8 to 64 lower-case hex digits (the file's digest or "
                              f"its prefix), got {self.sha256!r}", path="sha256")
        for key in ("backbone", "head"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{where}: {key} must name a registered {key}, got {getattr(self, key)!r}",
                                  path=key)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError(f"{where}: num_classes must be a positive integer, got {self.num_classes!r}",
                              path="num_classes")
        options = self.backbone_kwargs
        if not isinstance(options, Mapping) or not all(isinstance(k, str) and k != "name" for k in options):
            raise ConfigError(f"{where}: backbone_kwargs must map backbone option names to values (the backbone "
                              f"itself is the 'backbone' field), got {options!r}", path="backbone_kwargs")

    @property
    def backbone_spec(self) -> str | dict[str, Any]:
        """What to pass as ``registry.build(..., backbone=...)`` for this checkpoint."""
        return {"name": self.backbone, **self.backbone_kwargs} if self.backbone_kwargs else self.backbone

    @property
    def filename(self) -> str:
        """The URL's file name, without query or fragment (the name the cached file gets)."""
        return url_file_name(self.url)

    @property
    def sha256_is_prefix(self) -> bool:
        return len(self.sha256) < 64

    @property
    def path(self) -> Path:
        """Where the file is (or must be placed) in the cache: :func:`~vertebra.weights.cache.cache_path`."""
        return cache_path(self)


def _names_a_file(url: str) -> bool:
    return bool(urlsplit(url).path.rsplit("/", 1)[-1])


def describe_entry(entry: WeightsEntry) -> dict[str, Any]:
    """Plain-data view of an entry for ``vertebra info`` / docs."""
    return {"name": entry.name, "backbone": entry.backbone, "head": entry.head,
            "num_classes": entry.num_classes, "url": entry.url, "sha256": entry.sha256,
            "sha256_is_prefix": entry.sha256_is_prefix, "path": str(entry.path),
            "origin": entry.origin, "metrics": dict(entry.metrics), "head_kwargs": dict(entry.head_kwargs),
            "backbone_kwargs": dict(entry.backbone_kwargs), "notes": entry.notes}
