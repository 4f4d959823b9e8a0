"""Finding and loading vertebra plugins, each one in isolation.

A plugin is found in one of three ways: the built-in plugin (``vertebra.plugins.builtin``, always
first), an entry point in the ``vertebra`` group of an installed distribution, or an object handed
to :func:`vertebra.registry.register_plugin` at run time.  Loading one means: import it, register it
with pluggy (which validates its hook implementations), then call *only its* hooks with a
``register`` callable that writes into a staging area private to that plugin.  The staged entries
are handed back only when every step succeeded, so a plugin that fails half-way leaves nothing
behind, and the other plugins never notice.

Environment variables (read when discovery runs, i.e. on the first registry call):

``VERTEBRA_STRICT_PLUGINS=1``           a failing plugin raises :class:`~vertebra.errors.PluginError`
``VERTEBRA_DISABLE_PLUGIN_AUTOLOAD=1``  entry points are listed as disabled; only built-ins load
``VERTEBRA_DISABLE_PLUGINS=a,b``        skip the plugins named ``a`` and ``b`` (status "disabled")
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pluggy

from ..errors import PluginError
from . import hookspecs
from ._guard import contained, describe_cause
from ._lazy import LazyFactory

__all__ = [
    "BUILTIN_NAME", "ENTRY_POINT_GROUP", "KINDS", "WEIGHTS", "TABLES", "NAMESPACE", "PluginInfo", "PluginWarning",
    "Registration",
    "Settings", "Candidate", "PluginLoader", "discover", "rediscover", "generation",
]

BUILTIN_NAME = "vertebra"
BUILTIN_MODULE = "vertebra.plugins.builtin"
ENTRY_POINT_GROUP = "vertebra"
KINDS = ("backbone", "head")  # what the registry builds
WEIGHTS = "weights"           # named checkpoints (vertebra.weights.WeightsEntry), looked up like the kinds
TABLES = (*KINDS, WEIGHTS)
NAMESPACE = "namespace"       # a backbone name prefix resolved on use (``timm:...``), not listed
HOOKS = {"backbone": "vertebra_register_backbones", "head": "vertebra_register_heads",
         WEIGHTS: "vertebra_register_weights", NAMESPACE: "vertebra_register_backbone_namespaces"}
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*\Z")

ENV_STRICT = "VERTEBRA_STRICT_PLUGINS"
ENV_NO_AUTOLOAD = "VERTEBRA_DISABLE_PLUGIN_AUTOLOAD"
ENV_DISABLE = "VERTEBRA_DISABLE_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin failed to load (or was misconfigured); the rest of vertebra works without it."""


@dataclass(frozen=True)
class Registration:
    """One thing a plugin registered: a backbone or head factory, or (kind ``"weights"``) a WeightsEntry."""

    kind: str
    name: str
    factory: Callable[..., Any]


@dataclass(frozen=True)
class PluginInfo:
    """The status of one plugin, as ``vertebra plugins`` shows it.

    status: ``"loaded"``, ``"failed"`` (``detail`` holds the exception) or ``"disabled"``
    (``detail`` says which setting disabled it).
    """

    name: str
    distribution: str | None
    version: str | None
    source: str
    status: str
    detail: str | None = None
    backbones: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    """The plugin environment variables, parsed once per discovery."""

    strict: bool = False
    autoload: bool = True
    disabled: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        disabled = frozenset(p.strip() for p in environ.get(ENV_DISABLE, "").split(",") if p.strip())
        return cls(strict=_truthy(environ.get(ENV_STRICT)),
                   autoload=not _truthy(environ.get(ENV_NO_AUTOLOAD)),
                   disabled=disabled)


@dataclass(frozen=True)
class Candidate:
    """A plugin that was found but not imported yet; ``load()`` imports it."""

    name: str
    load: Callable[[], Any] = field(repr=False)
    distribution: str | None = None
    version: str | None = None
    source: str = ""
    autoloaded: bool = True  # found through an entry point (VERTEBRA_DISABLE_PLUGIN_AUTOLOAD applies)


_generation = 0  # bumped by rediscover(); the registry discovers again when it changes


def rediscover() -> None:
    """Make the next registry call discover plugins afresh (``sys.path`` and the environment re-read).

    The registry keeps what discovery found and sits above this module, so it is not told to forget:
    it compares :func:`generation` with the one it discovered under.
    """
    global _generation
    _generation += 1


def generation() -> int:
    """How many times :func:`rediscover` was called."""
    return _generation


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _builtin_candidate() -> Candidate:
    from importlib import import_module

    from ..version import __version__

    return Candidate(BUILTIN_NAME, lambda: import_module(BUILTIN_MODULE), "vertebra", __version__,
                     f"built-in module {BUILTIN_MODULE}", autoloaded=False)


def _entry_points() -> Iterable[Any]:
    """The ``vertebra`` entry points of every distribution on ``sys.path`` (patched in tests)."""
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def _normalise(dist_name: str | None) -> str | None:
    return None if dist_name is None else re.sub(r"[-_.]+", "-", dist_name).lower()


def discover() -> list[Candidate]:
    """Every plugin candidate, built-in first, then entry points sorted by name.

    A distribution that appears twice on ``sys.path`` (an installed copy plus a source checkout,
    say) yields the same entry point twice; only the first one found is kept, as ``import`` would.
    """
    candidates = [_builtin_candidate()]
    seen: set[tuple[str | None, str, str | None]] = set()
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        key = (_normalise(dist_name), ep.name, None if dist_name else ep.value)
        if key in seen:
            continue
        seen.add(key)
        candidates.append(Candidate(ep.name, ep.load, dist_name, dist.version if dist else None,
                                    f"entry point {ep.name} = {ep.value}"))
    return candidates


class _Staging:
    """Collects one plugin's registrations; the loader commits them only if the plugin succeeds."""

    def __init__(self, plugin: str):
        self.plugin = plugin
        self.entries: list[Registration] = []
        self._seen: set[tuple[str, str]] = set()

    def register_for(self, kind: str) -> Callable[..., None]:
        if kind == WEIGHTS:
            def register_weights(entry: Any) -> None:
                self._add_weights(entry)

            register_weights.__doc__ = "Register a named checkpoint: ``register(WeightsEntry(...))``."
            return register_weights

        def register(name: str, factory: Callable[..., Any]) -> None:
            self._add(kind, name, factory)

        register.__doc__ = f"Register a {kind}: ``register(name, factory)``."
        return register

    def _add_weights(self, entry: Any) -> None:
        from ..weights.entry import WeightsEntry  # no torch: an entry is plain data

        if not isinstance(entry, WeightsEntry):
            raise PluginError(f"plugin {self.plugin!r} registered {entry!r:.60} as weights; register a "
                              f"vertebra.plugins.WeightsEntry(name=..., url=..., sha256=..., backbone=..., "
                              f"head=..., num_classes=...)")
        self._stage(WEIGHTS, entry.name, entry)

    def _add(self, kind: str, name: Any, factory: Any) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise PluginError(f"plugin {self.plugin!r} tried to register the {kind} name {name!r}; names must "
                              f"be lower-case identifiers matching [a-z][a-z0-9_]* (e.g. 'my_net')")
        if not callable(factory):
            raise PluginError(f"plugin {self.plugin!r} registered {kind} {name!r} as a "
                              f"{type(factory).__name__} ({factory!r:.60}), which is not callable; register "
                              f"the factory function itself")
        if isinstance(factory, LazyFactory):
            if factory.plugin is None:
                factory.plugin = self.plugin
            factory.check()  # a module that cannot be found fails the plugin now, not at first use
        self._stage(kind, name, factory)

    def _stage(self, kind: str, name: str, value: Any) -> None:
        if (kind, name) in self._seen:
            raise PluginError(f"plugin {self.plugin!r} registered the {kind} {name!r} twice")
        self._seen.add((kind, name))
        self.entries.append(Registration(kind, name, value))


class PluginLoader:
    """Owns the pluggy ``PluginManager`` and loads candidates into it one at a time."""

    def __init__(self, settings: Settings | None = None):
        self.settings = Settings.from_env() if settings is None else settings
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)

    def load(self, candidate: Candidate, *, explicit: bool = False,
             taken: Iterable[str] = ()) -> tuple[PluginInfo, list[Registration]]:
        """Load one plugin in isolation: ``(status, registrations)``; failures are reported, not raised.

        A failure raises :class:`PluginError` instead of warning in strict mode, and when
        ``explicit`` (the caller asked for this very plugin, so the disable settings do not apply).
        """
        strict = self.settings.strict or explicit
        if not explicit and candidate.name in self.settings.disabled:
            return self._info(candidate, "disabled", f"{ENV_DISABLE} names it"), []
        if not explicit and candidate.autoloaded and not self.settings.autoload:
            return self._info(candidate, "disabled", f"{ENV_NO_AUTOLOAD}=1"), []
        if ":" in candidate.name or not candidate.name:
            return self._fail(strict, candidate, "has an invalid plugin name (it may not be empty or contain ':')",
                              None), []
        if candidate.name in set(taken) or self.manager.get_plugin(candidate.name) is not None:
            return self._fail(strict, candidate, "uses a plugin name that another plugin already took", None), []
        try:
            with contained():
                plugin = candidate.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is this plugin's problem only
            return self._fail(strict, candidate, "failed to import", exc), []
        try:
            with contained():
                self.manager.register(plugin, name=candidate.name)
                self.manager.check_pending()
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors, double registration
            self._forget(plugin, candidate.name)
            return self._fail(strict, candidate, "is not a valid vertebra plugin", exc), []
        staging = _Staging(candidate.name)
        others = [p for p in self.manager.get_plugins() if p is not plugin]
        for kind, hook in HOOKS.items():
            try:
                with contained():
                    self.manager.subset_hook_caller(hook, remove_plugins=others)(register=staging.register_for(kind))
            except Exception as exc:  # noqa: BLE001 - isolate the plugin, keep nothing it staged
                self._forget(plugin, candidate.name)
                return self._fail(strict, candidate, f"raised in its {hook} hook", exc), []
        names = {kind: tuple(sorted(r.name for r in staging.entries if r.kind == kind)) for kind in TABLES}
        return self._info(candidate, "loaded", None, **names), staging.entries

    def _forget(self, plugin: Any, name: str) -> None:
        if self.manager.get_plugin(name) is plugin:
            self.manager.unregister(plugin, name=name)

    def forget(self, name: str) -> None:
        """Unregister a loaded plugin from pluggy (its entries are the catalog's business)."""
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin, name=name)

    def _info(self, candidate: Candidate, status: str, detail: str | None, *, backbone: tuple[str, ...] = (),
              head: tuple[str, ...] = (), weights: tuple[str, ...] = ()) -> PluginInfo:
        return PluginInfo(candidate.name, candidate.distribution, candidate.version, candidate.source,
                          status, detail, backbone, head, weights)

    def _fail(self, strict: bool, candidate: Candidate, what: str, exc: BaseException | None) -> PluginInfo:
        cause = "" if exc is None else f": {describe_cause(exc)}"
        dist = (f"distribution {candidate.distribution} {candidate.version or '(unknown version)'}"
                if candidate.distribution else "no distribution")
        message = (f"vertebra plugin {candidate.name!r} ({candidate.source}; {dist}) {what}{cause}")
        if strict:
            why = f" [{ENV_STRICT}=1 makes plugin failures errors]" if self.settings.strict else ""
            raise PluginError(message + why) from exc
        warnings.warn(message + f". Nothing from it is registered; other plugins are unaffected. Skip it "
                      f"with {ENV_DISABLE}={candidate.name}, or set {ENV_STRICT}=1 to make this an error.",
                      PluginWarning, stacklevel=2)
        return self._info(candidate, "failed", f"{what}{cause}")

    def report_shadowing(self, info: PluginInfo, shadowed: list[tuple[str, str]]) -> None:
        """``(kind, name)`` this plugin registered that vertebra registers too: the bare names stay the built-ins'."""
        if not shadowed:
            return
        dist = f"distribution {info.distribution} {info.version or ''}".strip() if info.distribution else \
            "no distribution"
        names = ", ".join(f"{kind} {name!r}" for kind, name in shadowed)
        qualified = ", ".join(repr(f"{info.name}:{name}") for _, name in shadowed)
        message = (f"vertebra plugin {info.name!r} ({dist}) registers names that are built-in: {names}. The "
                   f"bare names keep meaning vertebra's built-in entries; reach the plugin's with the qualified "
                   f"names {qualified}, or rename them in the plugin")
        self._warn_or_refuse(message)

    def report_conflicts(self, plugin: str, conflicts: list[str]) -> None:
        """Names this plugin registered that another plugin registered too (kept; bare lookup refuses)."""
        if not conflicts:
            return
        message = (f"vertebra plugin {plugin!r} registers names another plugin registered too: "
                   f"{'; '.join(conflicts)}. Bare lookups of these names are refused; use qualified "
                   f"names (plugin:name)")
        self._warn_or_refuse(message)

    def _warn_or_refuse(self, message: str) -> None:
        """A name problem is a PluginWarning, or a PluginError in strict mode."""
        if self.settings.strict:
            raise PluginError(message + f" [{ENV_STRICT}=1 makes this an error]")
        warnings.warn(message, PluginWarning, stacklevel=4)  # the caller of report_*, as before

    def warn_unknown_disabled(self, known: Iterable[str]) -> None:
        """A name in ``VERTEBRA_DISABLE_PLUGINS`` that matches no plugin is most likely a typo."""
        unknown = sorted(self.settings.disabled - set(known))
        if unknown:
            warnings.warn(f"{ENV_DISABLE} names {', '.join(map(repr, unknown))}, but no plugin has that name; "
                          f"known plugins: {', '.join(sorted(known))}", PluginWarning, stacklevel=2)
