"""The name table: which plugin registered which backbone and head, loaded once, lazily.

Nothing here imports torch.  The first lookup runs plugin discovery (:mod:`vertebra.plugins._loader`);
every later call reuses the result until :func:`reset`.  Two plugins may register the same name:
both entries are kept, the bare name then refuses to guess (naming both sources), and the qualified
name ``plugin:name`` always works.  The one exception: a name vertebra itself registers keeps
meaning the built-in entry (the plugin is warned about), so no plugin can break shipped configs.

A *namespace* (``vertebra_register_backbone_namespaces``) is a prefix whose backbones are resolved on
use: ``timm:resnet18`` is not in the table until it is looked up, then its resolver returns the
factory and the entry is kept until the next change.  Listing asks a namespace for names only when
the pattern names its prefix (``'timm:*resnet*'``), so plain listing never imports a zoo.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import ConfigError, PluginError, UnknownNameError, VertebraError
from ..plugins._guard import describe_cause
from ..plugins._loader import (BUILTIN_NAME, KINDS, NAMESPACE, TABLES, Candidate, PluginInfo, PluginLoader,
                               Registration, Settings, discover, generation)
from ..plugins._lock import first_use_lock

__all__ = ["Entry", "Catalog", "catalog", "reset", "register_plugin", "unregister_plugin"]


@dataclass(frozen=True)
class Entry:
    """A registered backbone factory or head builder and where it came from.

    For kind ``"weights"``, ``factory`` is the registered :class:`~vertebra.weights.WeightsEntry`.
    """

    kind: str
    name: str
    factory: Callable[..., Any] = field(repr=False)
    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def qualified_name(self) -> str:
        """``plugin:name``: unambiguous even when two plugins register the same name.

        A backbone resolved through a namespace is named ``prefix:name`` already, which is its
        qualified name.
        """
        return self.name if ":" in self.name else f"{self.plugin}:{self.name}"

    @property
    def source(self) -> str:
        dist = f"{self.distribution} {self.version or ''}".strip() if self.distribution else "no distribution"
        return f"plugin {self.plugin!r} ({dist})"


class Catalog:
    """Every loaded entry, by kind and bare name, plus the status of every plugin."""

    def __init__(self, loader: PluginLoader):
        self.loader = loader
        self.plugins: list[PluginInfo] = []
        self._entries: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in (*TABLES, NAMESPACE)}
        self.cache: dict[Any, Any] = {}  # describe()/compatible() results; dropped on every change

    # -- loading --------------------------------------------------------------------------------
    def add(self, candidate: Candidate, *, explicit: bool = False) -> PluginInfo:
        info, registrations = self.loader.load(candidate, explicit=explicit,
                                               taken=[p.name for p in self.plugins])
        shadowed, conflicts = [], []
        for r in registrations:
            others = self._entries[r.kind].get(r.name, [])
            if any(e.plugin == BUILTIN_NAME for e in others):
                shadowed.append((r.kind, r.name))
            elif others:
                conflicts.append(f"{r.kind} {r.name!r} (also from {', '.join(e.source for e in others)})")
        try:
            self.loader.report_shadowing(info, shadowed)
            self.loader.report_conflicts(info.name, conflicts)
        except PluginError:
            self.loader.forget(info.name)
            raise
        self.plugins.append(info)
        for registration in registrations:
            self._add_entry(registration, info)
        self.cache.clear()
        return info

    def _add_entry(self, registration: Registration, info: PluginInfo) -> None:
        entry = Entry(registration.kind, registration.name, registration.factory, info.name,
                      info.distribution, info.version)
        self._entries[entry.kind].setdefault(entry.name, []).append(entry)

    def remove_plugin(self, name: str) -> None:
        if not any(p.name == name for p in self.plugins):
            raise UnknownNameError("plugin", name, [p.name for p in self.plugins])
        self.plugins = [p for p in self.plugins if p.name != name]
        for table in self._entries.values():
            for bare in list(table):
                table[bare] = [e for e in table[bare] if e.plugin != name]
                if not table[bare]:
                    del table[bare]
        self.loader.forget(name)
        self.cache.clear()

    # -- queries --------------------------------------------------------------------------------
    def entries(self, kind: str) -> list[Entry]:
        return sorted((e for group in self._entries[kind].values() for e in group),
                      key=lambda e: (e.name, e.plugin))

    def bare_owner(self, kind: str, name: str) -> Entry | None:
        """The entry a bare ``name`` means: the only one, else the built-in one; ``None``: none or ambiguous.

        A built-in name always means the built-in entry, so a plugin that registers
        ``mobilenet_v3_large`` too cannot make every shipped config ambiguous (it is warned about at
        discovery, and ``plugin:name`` reaches its entry).  Two third-party entries stay ambiguous:
        neither has a better claim.
        """
        found = self._entries[kind].get(name, [])
        if len(found) == 1:
            return found[0]
        builtin = [e for e in found if e.plugin == BUILTIN_NAME]
        return builtin[0] if builtin else None

    def display_name(self, entry: Entry) -> str:
        """The bare name when it means ``entry``, else the qualified one."""
        return entry.name if self.bare_owner(entry.kind, entry.name) is entry else entry.qualified_name

    def names(self, kind: str, pattern: str | None = None) -> list[str]:
        result = []
        for entry in self.entries(kind):
            if pattern is None or fnmatch.fnmatchcase(entry.name, pattern) or \
                    fnmatch.fnmatchcase(entry.qualified_name, pattern):
                result.append(self.display_name(entry))
        result += [name for name, _ in self.namespace_names(kind, pattern)]
        return sorted(result)

    def kinds_of(self, name: str) -> list[str]:
        """The kinds ``name`` is registered as; a namespaced name (``timm:resnet18``) is a backbone."""
        prefix, _, bare = name.rpartition(":")
        namespaced = bool(prefix) and self.bare_owner(NAMESPACE, prefix) is not None
        return [kind for kind in KINDS if bare in self._entries[kind] or (namespaced and kind == "backbone")]

    def lookup(self, kind: str, name: Any) -> Entry:
        """The entry for ``name`` (bare or ``plugin:name``); errors suggest and explain."""
        if kind not in self._entries:
            raise ConfigError(f"kind must be one of {', '.join(TABLES)}, got {kind!r}", path="kind")
        if not isinstance(name, str):
            raise UnknownNameError(kind, repr(name), self.names(kind))
        table = self._entries[kind]
        if ":" in name:
            plugin, bare = name.split(":", 1)
            for entry in table.get(bare, ()):
                if entry.plugin == plugin:
                    return entry
            namespace = self.bare_owner(NAMESPACE, plugin) if kind == "backbone" else None
            if namespace is not None:
                return self._resolve(namespace, bare)
            if not any(p.name == plugin for p in self.plugins):
                raise self.unknown("plugin", plugin, [p.name for p in self.plugins])
            raise self.unknown(kind, name, [e.qualified_name for e in self.entries(kind)])
        found = table.get(name, [])
        owner = self.bare_owner(kind, name)
        if owner is not None:
            return owner
        if found:
            sources = " and ".join(e.source for e in found)
            choices = " or ".join(repr(e.qualified_name) for e in found)
            raise PluginError(f"{kind} {name!r} is registered by more than one plugin: {sources}; "
                              f"use the qualified name {choices}")
        raise self.unknown(kind, name, self.names(kind))

    def namespace_names(self, kind: str, pattern: str | None) -> list[tuple[str, Entry]]:
        """``(name, namespace entry)`` for the names a namespace lists for ``pattern`` (``'timm:*resnet*'``).

        Only a pattern whose prefix (before the colon, no wildcards) is a namespace asks it; a
        resolver without ``list_names`` lists nothing; a name a plugin registered itself is left
        to that entry.
        """
        prefix, colon, rest = (pattern or "").partition(":")
        namespace = self.bare_owner(NAMESPACE, prefix) if kind == "backbone" and colon else None
        if namespace is None or not hasattr(namespace.factory, "list_names"):
            return []
        taken = {entry.qualified_name for entry in self.entries(kind)}  # a plugin's own entry wins
        return [(f"{prefix}:{name}", namespace) for name in namespace.factory.list_names(rest)
                if f"{prefix}:{name}" not in taken]

    def _resolve(self, namespace: Entry, name: str) -> Entry:
        """The backbone ``namespace.name:name``, asked of its resolver once per catalog state."""
        key = ("resolved", namespace.name, name)
        if key not in self.cache:
            try:
                factory = namespace.factory(name)
            except (VertebraError, MemoryError, OSError):
                raise
            except Exception as exc:  # noqa: BLE001 - the resolver's bug, named with its plugin
                raise PluginError(f"{namespace.source}: resolving backbone {namespace.name}:{name} failed: "
                                  f"{describe_cause(exc)}") from exc
            if not callable(factory):
                raise PluginError(f"{namespace.source}: the {namespace.name!r} namespace resolved {name!r} "
                                  f"to a {type(factory).__name__}, not a backbone factory")
            self.cache[key] = Entry("backbone", f"{namespace.name}:{name}", factory, namespace.plugin,
                                    namespace.distribution, namespace.version)
        return self.cache[key]

    def unknown(self, kind: str, name: str, candidates: list[str]) -> UnknownNameError:
        error = UnknownNameError(kind, name, candidates)
        hints = []
        other = [k for k in self.kinds_of(name) if k != kind]
        if other:
            hints.append(f"{name!r} is a {other[0]}, not a {kind}")
        failed = [p.name for p in self.plugins if p.status == "failed"]
        if failed:
            hints.append(f"plugin(s) {', '.join(failed)} failed to load (see `vertebra plugins`)")
        if hints:
            error.args = (error.args[0] + " (" + "; ".join(hints) + ")",)
        return error


_lock = first_use_lock  # discovery and lazy imports share one lock: see vertebra.plugins._lock
_catalog: Catalog | None = None
_discovered_in = -1  # the plugins' discovery generation the catalog was built in


def catalog() -> Catalog:
    """The loaded catalog, running plugin discovery on first use and after a
    :func:`vertebra.plugins._loader.rediscover` (thread-safe)."""
    global _catalog, _discovered_in
    with _lock:
        if _catalog is None or _discovered_in != generation():
            current = generation()
            loader = PluginLoader(Settings.from_env())
            fresh = Catalog(loader)
            candidates = discover()
            for candidate in candidates:
                fresh.add(candidate)
            loader.warn_unknown_disabled(c.name for c in candidates)
            _catalog, _discovered_in = fresh, current
        return _catalog


def reset() -> None:
    """Forget every loaded plugin; the next registry call discovers again (re-reading the environment)."""
    global _catalog
    with _lock:
        _catalog = None


def register_plugin(plugin: Any, name: str) -> PluginInfo:
    """Load ``plugin`` (a module or object with ``@hookimpl`` functions) now, under ``name``.

    For notebooks and tests: the same isolation and validation as an entry point, but a failure
    raises :class:`~vertebra.errors.PluginError` since the caller asked for this plugin explicitly.
    """
    with _lock:
        candidate = Candidate(name, lambda: plugin, None, None, "registered at run time", autoloaded=False)
        return catalog().add(candidate, explicit=True)


def unregister_plugin(name: str) -> None:
    """Remove a plugin and everything it registered (the reverse of :func:`register_plugin`)."""
    with _lock:
        catalog().remove_plugin(name)
