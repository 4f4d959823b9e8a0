"""Plugin machinery: the hook specifications, the loader, and the built-in plugin.

Plugin authors need only :data:`hookimpl` (see :mod:`vertebra.plugins.hookspecs` for the hooks),
:func:`lazy` to register a factory without importing its module until it is used, and
:class:`WeightsEntry` to register a named checkpoint.
"""

from ..weights.entry import WeightsEntry
from ._lazy import LazyFactory, lazy
from ._loader import PluginInfo, PluginWarning
from .hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec", "lazy", "LazyFactory", "PluginInfo", "PluginWarning", "WeightsEntry"]
