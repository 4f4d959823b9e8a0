"""vertebra: any vision backbone under any head.

``from vertebra import registry`` is the only door most users need.  Importing ``vertebra`` is
cheap: the registry, the plugins and torch-heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

# name -> the module it lives in; ``optimize`` is the function (vertebra.inference re-exports it), never a module
_HOMES = {"registry": ".registry", "optimize": ".inference"}
__all__ = ["registry", "optimize", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import registry
    from .inference import optimize

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
