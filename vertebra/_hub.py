"""Named pretrained checkpoints: where they come from, where they are cached, how they are checked.

vertebra's own entries (:data:`TORCHVISION_ENTRIES`) are torchvision's published ImageNet / COCO
checkpoints for the families vertebra builds.  The URLs are copied from torchvision's weight enums
(``torchvision/models/*.py``).  The hash is the one torchvision itself checks: the hex string after
the last ``-`` of the file name, which is a *prefix* of the file's SHA-256 digest
(``torch.hub.HASH_REGEX``; torchvision's builders call ``get_state_dict(check_hash=True)``).  It is
only a prefix (8 hex digits, 32 bits): enough to catch a truncated or wrong file, not a
cryptographic guarantee.  Loading uses ``weights_only=True`` regardless, so a tampered file cannot
run code.

The built-in plugin registers that table through the ``vertebra_register_weights`` hook, the same
hook a third-party plugin uses for its own checkpoints, so :func:`named_weights` and
:func:`get_weights_entry` read the registry (qualified names ``plugin:name`` work as for backbones).

Resolution is offline-first: ``$VERTEBRA_HOME/checkpoints/<file name>`` (default
``~/.cache/vertebra``) is used when present; otherwise the file is downloaded to a temporary file
next to it and renamed into place only after its hash matches.  Without a network the error names
the exact path to copy the file to, and the URL to fetch it from elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, UnknownNameError, WeightsError

__all__ = ["WeightsEntry", "TORCHVISION_ENTRIES", "cache_dir", "named_weights", "get_weights_entry", "resolve",
           "fetch", "sha256_of", "verify_sha256", "describe_entry"]

_TORCHVISION_URL = "https://download.pytorch.org/models/"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # the same rule as torch.hub.HASH_REGEX
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
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def sha256_is_prefix(self) -> bool:
        return len(self.sha256) < 64

    @property
    def path(self) -> Path:
        """Where the file is (or must be placed) in the cache: ``<cache_dir()>/checkpoints/<filename>``."""
        return cache_dir() / "checkpoints" / self.filename


def _names_a_file(url: str) -> bool:
    return bool(urlsplit(url).path.rsplit("/", 1)[-1])


def _torchvision(name: str, origin: str, filename: str, *, backbone: str, head: str = "classifier",
                 num_classes: int = 1000, options: dict[str, Any] | None = None, notes: str = "",
                 **metrics: float) -> WeightsEntry:
    """One table row: a torchvision checkpoint, its hash prefix read from the file name as torch.hub does."""
    match = _HASH_IN_NAME.search(filename)
    assert match, filename  # table typo, caught by the test over every entry
    return WeightsEntry(name=name, url=_TORCHVISION_URL + filename, sha256=match.group(1),
                        backbone=backbone, head=head, num_classes=num_classes,
                        origin=f"torchvision.models.{origin}", metrics=dict(metrics),
                        head_kwargs={"num_classes": num_classes, **(options or {})}, notes=notes)


_VOC = "COCO train2017 images with the 20 Pascal VOC categories (21 classes with background)"
_COCO = "COCO train2017, 91 category ids (torchvision's numbering, background 0)"

# name,                                  torchvision enum member,                  file name
TORCHVISION_ENTRIES = (
    _torchvision("efficientnet_b0.imagenet", "EfficientNet_B0_Weights.IMAGENET1K_V1",
                 "efficientnet_b0_rwightman-7f5810bc.pth", backbone="efficientnet_b0", acc1=77.692, acc5=93.532),
    _torchvision("efficientnet_b1.imagenet", "EfficientNet_B1_Weights.IMAGENET1K_V2",
                 "efficientnet_b1-c27df63c.pth", backbone="efficientnet_b1", acc1=79.838, acc5=94.934),
    _torchvision("efficientnet_b1.imagenet_v1", "EfficientNet_B1_Weights.IMAGENET1K_V1",
                 "efficientnet_b1_rwightman-bac287d4.pth", backbone="efficientnet_b1", acc1=78.642, acc5=94.186),
    _torchvision("efficientnet_b2.imagenet", "EfficientNet_B2_Weights.IMAGENET1K_V1",
                 "efficientnet_b2_rwightman-c35c1473.pth", backbone="efficientnet_b2", acc1=80.608, acc5=95.31),
    _torchvision("efficientnet_b3.imagenet", "EfficientNet_B3_Weights.IMAGENET1K_V1",
                 "efficientnet_b3_rwightman-b3899882.pth", backbone="efficientnet_b3", acc1=82.008, acc5=96.054),
    _torchvision("efficientnet_b4.imagenet", "EfficientNet_B4_Weights.IMAGENET1K_V1",
                 "efficientnet_b4_rwightman-23ab8bcd.pth", backbone="efficientnet_b4", acc1=83.384, acc5=96.594),
    _torchvision("efficientnet_b5.imagenet", "EfficientNet_B5_Weights.IMAGENET1K_V1",
                 "efficientnet_b5_lukemelas-1a07897c.pth", backbone="efficientnet_b5", acc1=83.444, acc5=96.628),
    _torchvision("efficientnet_b6.imagenet", "EfficientNet_B6_Weights.IMAGENET1K_V1",
                 "efficientnet_b6_lukemelas-24a108a5.pth", backbone="efficientnet_b6", acc1=84.008, acc5=96.916),
    _torchvision("efficientnet_b7.imagenet", "EfficientNet_B7_Weights.IMAGENET1K_V1",
                 "efficientnet_b7_lukemelas-c5b4e57e.pth", backbone="efficientnet_b7", acc1=84.122, acc5=96.908),
    _torchvision("efficientnet_v2_s.imagenet", "EfficientNet_V2_S_Weights.IMAGENET1K_V1",
                 "efficientnet_v2_s-dd5fe13b.pth", backbone="efficientnet_v2_s", acc1=84.228, acc5=96.878),
    _torchvision("efficientnet_v2_m.imagenet", "EfficientNet_V2_M_Weights.IMAGENET1K_V1",
                 "efficientnet_v2_m-dc08266a.pth", backbone="efficientnet_v2_m", acc1=85.112, acc5=97.156),
    _torchvision("efficientnet_v2_l.imagenet", "EfficientNet_V2_L_Weights.IMAGENET1K_V1",
                 "efficientnet_v2_l-59c71312.pth", backbone="efficientnet_v2_l", acc1=85.808, acc5=97.788),
    _torchvision("mobilenet_v3_large.imagenet", "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
                 "mobilenet_v3_large-5c1a4163.pth", backbone="mobilenet_v3_large", acc1=75.274, acc5=92.566),
    _torchvision("mobilenet_v3_large.imagenet_v1", "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
                 "mobilenet_v3_large-8738ca79.pth", backbone="mobilenet_v3_large", acc1=74.042, acc5=91.34),
    _torchvision("mobilenet_v3_small.imagenet", "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                 "mobilenet_v3_small-047dcff4.pth", backbone="mobilenet_v3_small", acc1=67.668, acc5=87.402),
    # Dense checkpoints (COCO); their head's own weights_key_map renames torchvision's layout.
    _torchvision("lraspp_mobilenet_v3_large.coco_voc", "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                 "lraspp_mobilenet_v3_large-d234d4ea.pth", backbone="mobilenet_v3_large", head="lraspp",
                 num_classes=21, options={"preset": "torchvision"}, notes=_VOC, miou=57.9, pixel_acc=91.2),
    _torchvision("deeplabv3_mobilenet_v3_large.coco_voc",
                 "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                 "deeplabv3_mobilenet_v3_large-fc3c493d.pth", backbone="mobilenet_v3_large", head="deeplabv3",
                 num_classes=21, options={"preset": "torchvision", "aux_loss": True},
                 notes=f"{_VOC}; includes the auxiliary FCN head", miou=60.3, pixel_acc=91.2),
    _torchvision("fasterrcnn_mobilenet_v3_large_fpn.coco", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
                 "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth", backbone="mobilenet_v3_large",
                 head="fasterrcnn_fpn", num_classes=91, options={"preset": "torchvision", "frozen_bn": True},
                 notes=f"{_COCO}; images resized to 800-1333", box_map=32.8),
    _torchvision("fasterrcnn_mobilenet_v3_large_320_fpn.coco",
                 "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
                 "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth", backbone="mobilenet_v3_large",
                 head="fasterrcnn_fpn", num_classes=91, options={"preset": "torchvision_320", "frozen_bn": True},
                 notes=f"{_COCO}; images resized to 320-640, 150 RPN proposals at test time", box_map=22.8),
)


def named_weights() -> dict[str, WeightsEntry]:
    """Every registered checkpoint, by name (a fresh dict; mutating it changes nothing).

    A name two plugins both register appears once per plugin, qualified (``plugin:name``).
    """
    from .registry import _catalog

    table = _catalog.catalog()
    return {table.display_name(entry): entry.factory for entry in table.entries("weights")}


def get_weights_entry(name: str) -> WeightsEntry:
    """The entry called ``name`` (or ``plugin:name``); :class:`UnknownNameError` with close matches otherwise."""
    from .registry import _catalog

    try:
        return _catalog.catalog().lookup("weights", name).factory
    except UnknownNameError as error:
        error.args = (error.args[0] + " (or pass the path of a .pth, .pt or .safetensors file)",)
        raise


def cache_dir() -> Path:
    """``$VERTEBRA_HOME`` if set, else ``~/.cache/vertebra``; read on every call so tests can redirect it."""
    home = os.environ.get("VERTEBRA_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "vertebra"


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
    if target.is_file():
        return target, verify_sha256(target, entry.sha256, what=f"cached weights for {entry.name!r}")
    if not download or os.environ.get("VERTEBRA_OFFLINE", "") not in ("", "0"):
        raise WeightsError(_offline_message(entry, target, "downloads are disabled"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(_offline_message(entry, target, f"cannot create the cache directory: {error}")) from error
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
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


def _download_url(url: str, destination: str, progress: bool) -> None:
    """Fetch ``url`` into ``destination`` (the one function tests replace to stay offline)."""
    import torch.hub

    torch.hub.download_url_to_file(url, destination, hash_prefix=None, progress=progress)


def _offline_message(entry: WeightsEntry, target: Path, reason: str) -> str:
    return (f"weights {entry.name!r} are not in the cache and could not be fetched ({reason}). "
            f"Download {entry.url} on a machine with network access and place it at {str(target)!r} "
            f"(the cache is $VERTEBRA_HOME, default ~/.cache/vertebra), or pass the file's path as weights=")


def describe_entry(entry: WeightsEntry) -> dict[str, Any]:
    """Plain-data view of an entry for ``vertebra info`` / docs."""
    return {"name": entry.name, "backbone": entry.backbone, "head": entry.head,
            "num_classes": entry.num_classes, "url": entry.url, "sha256": entry.sha256,
            "sha256_is_prefix": entry.sha256_is_prefix, "path": str(entry.path),
            "origin": entry.origin, "metrics": dict(entry.metrics), "head_kwargs": dict(entry.head_kwargs),
            "backbone_kwargs": dict(entry.backbone_kwargs), "notes": entry.notes}
