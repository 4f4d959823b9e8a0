"""vertebra: any vision backbone under any head.

``from vertebra import registry`` is the only door most users need.  Importing ``vertebra`` is
cheap: the registry, the plugins and torch-heavy modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["registry", "optimize", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import registry
    from ._optimize import optimize


def __getattr__(name: str) -> Any:
    if name == "registry":
        return importlib.import_module(".registry", __name__)
    if name == "optimize":
        # the function; its module is private (``vertebra._optimize``), so the name never means a module
        return importlib.import_module("._optimize", __name__).optimize
    raise AttributeError(f"module 'vertebra' has no attribute {name!r}")
