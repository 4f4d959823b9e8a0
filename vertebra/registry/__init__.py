"""The registry: the one door to every backbone and head, whichever plugin provides it.

::

    from vertebra import registry
    registry.list_backbones("efficientnet*")                  # names, sorted (fnmatch pattern)
    registry.describe("efficientnet_b3")                       # levels, params, MACs; built on meta
    model = registry.build("lraspp", backbone="efficientnet_b3", num_classes=21)
    same = registry.build_from_config(model.config)            # or a .yaml / .json file
    registry.compatible("lraspp")                              # backbones that fit the head
    registry.list_weights("efficientnet*")                    # named checkpoints, from every plugin

Plugins (the built-in families included) are discovered lazily on the first call here, never at
``import vertebra``; :func:`plugins` reports what loaded, failed or was disabled.
"""

from __future__ import annotations

from ..plugins._loader import PluginInfo
from ._build import build, build_backbone, build_from_config, compatible, load_config
from ._catalog import Entry, register_plugin, unregister_plugin
from ._catalog import catalog as _get_catalog
from ._catalog import reset as _reset
from ._describe import REQUIRED, Description, describe

__all__ = [
    "build", "build_backbone", "build_from_config", "load_config", "list_backbones", "list_heads", "list_weights",
    "describe", "compatible", "plugins", "register_plugin", "unregister_plugin", "entry",
    "Description", "Entry", "PluginInfo", "REQUIRED",
]


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names matching the fnmatch ``pattern`` (all when ``None``), sorted.

    A name two plugins both register is listed once per plugin, qualified (``plugin:name``).
    """
    return _get_catalog().names("backbone", pattern)


def list_heads(pattern: str | None = None) -> list[str]:
    """Registered head names matching the fnmatch ``pattern`` (all when ``None``), sorted."""
    return _get_catalog().names("head", pattern)


def list_weights(pattern: str | None = None) -> list[str]:
    """Registered named checkpoints (``weights=`` values) matching ``pattern``, sorted.

    :func:`vertebra.weights.named_weights` returns the entries themselves (URL, hash, fit, metrics).
    """
    return _get_catalog().names("weights", pattern)


def plugins() -> list[PluginInfo]:
    """The status of every plugin found: loaded, failed (with the error) or disabled (with the reason)."""
    return list(_get_catalog().plugins)


def entry(kind: str, name: str) -> Entry:
    """The raw registry entry (factory, plugin, distribution) for a ``"backbone"``, ``"head"`` or ``"weights"`` name."""
    return _get_catalog().lookup(kind, name)
