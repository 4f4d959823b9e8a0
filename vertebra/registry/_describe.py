"""``describe(name)``: what an entry is, where it comes from, what it accepts, and (for backbones) its shape.

Backbone figures (levels, parameter count, MACs) come from a build on the ``meta`` device: every
tensor has a shape and no storage, so describing EfficientNet-B7 costs milliseconds and no memory.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..features import FeatureSpec
from ..plugins._loader import KINDS
from ..plugins._lock import first_use_lock
from ..text import first_line
from ._build import meta_backbone
from ._catalog import Entry, catalog
from ._kwargs import REQUIRED, signature_of

__all__ = ["Description", "describe", "REQUIRED"]


@dataclass(frozen=True)
class Description:
    """Everything ``vertebra info`` shows about one backbone or head.

    kwargs: the accepted keyword arguments with their defaults (``REQUIRED`` when there is none).
    levels / params / macs / input_size: backbones only, at default arguments; ``macs`` is counted
    at ``input_size`` x ``input_size`` (``None`` when it cannot be counted; ``notes`` says why).
    requirements: heads only, what the head asks of a backbone with default options.
    weights: the named checkpoints registered for this backbone or head (``weights=`` values).
    """

    kind: str
    name: str
    qualified_name: str
    plugin: str
    distribution: str | None
    version: str | None
    summary: str
    kwargs: dict[str, Any] = field(hash=False)
    levels: tuple[FeatureSpec, ...] = ()
    params: int | None = None
    macs: int | None = None
    input_size: int | None = None
    requirements: Any = None
    notes: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()


def describe(name: str, kind: str | None = None) -> Description:
    """Describe the backbone or head registered as ``name`` (``kind`` settles a name used by both)."""
    cat = catalog()
    if kind is not None:
        if kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", path="kind")
        entry = cat.lookup(kind, name)
    else:
        found = cat.kinds_of(name)
        if len(found) > 1:
            raise ConfigError(f"{name!r} is registered both as a backbone and as a head; pass "
                              f"kind='backbone' or kind='head' (CLI: --kind)")
        if not found:
            if ":" in name:  # let lookup explain an unknown plugin or qualified name
                cat.lookup("backbone", name)
            error = cat.unknown("backbone or head", name, cat.names("backbone") + cat.names("head"))
            error.args = (error.args[0].replace("registered backbone or heads:", "registered names:")
                          .replace("no backbone or heads are", "no backbones or heads are"),)
            raise error
        entry = cat.lookup(found[0], name)
    key = ("describe", entry.kind, entry.qualified_name)
    if key not in cat.cache:
        cat.cache[key] = _describe_backbone(entry) if entry.kind == "backbone" else _describe_head(entry)
    return cat.cache[key]


def _summary(entry: Entry) -> str:
    return first_line(inspect.getdoc(entry.factory))


def _base(entry: Entry, kwargs: dict[str, Any]) -> dict[str, Any]:
    return dict(kind=entry.kind, name=entry.name, qualified_name=entry.qualified_name, plugin=entry.plugin,
                distribution=entry.distribution, version=entry.version, summary=_summary(entry), kwargs=kwargs,
                weights=_weights_for(entry))


def _weights_for(entry: Entry) -> tuple[str, ...]:
    """Named checkpoints whose ``backbone`` (or ``head``) is this entry's name."""
    cat = catalog()
    return tuple(sorted(cat.display_name(w) for w in cat.entries("weights")
                        if getattr(w.factory, entry.kind) == entry.name))


def _describe_head(entry: Entry) -> Description:
    from ..heads._base import requirements_of

    kwargs = dict(signature_of(entry.factory, skip_first=True).params)
    return Description(**_base(entry, kwargs), requirements=requirements_of(entry.factory))


def _describe_backbone(entry: Entry) -> Description:
    kwargs = dict(signature_of(entry.factory).params)
    notes: list[str] = []
    module = meta_backbone(entry)
    info = getattr(module, "feature_info", None)
    levels = tuple(info) if info is not None else ()
    if info is None:
        notes.append("no feature_info: this backbone does not follow the feature contract")
    params = sum(p.numel() for p in module.parameters())
    meta = getattr(module, "meta", None)
    size = getattr(meta, "default_size", None) or 224
    macs = None
    try:
        with first_use_lock:  # a first import must not race another thread's (plugins._lock)
            from ..backbones._flops import count_macs
    except ImportError as exc:
        notes.append(f"MACs not counted: {exc}")
    else:
        try:
            macs = int(count_macs(module, size, size))
        except Exception as exc:  # noqa: BLE001 - a counting limitation must not break describe
            notes.append(f"MACs not counted: {type(exc).__name__}: {exc}")
    return Description(**_base(entry, kwargs), levels=levels, params=params, macs=macs, input_size=size,
                       notes=tuple(notes))
