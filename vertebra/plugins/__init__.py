"""Plugin machinery: the hook specifications and the built-in plugin that registers vertebra's own families."""

from .hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec"]
