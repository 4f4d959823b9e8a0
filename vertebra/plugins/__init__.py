"""Plugin machinery: the hook specifications, the loader, and the built-in plugin.

Plugin authors need only :data:`hookimpl` (see :mod:`vertebra.plugins.hookspecs` for the hooks).
"""

from ._loader import PluginInfo, PluginWarning
from .hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec", "PluginInfo", "PluginWarning"]
