"""Backbone families.  Each family is one file of architecture tables; ``_base`` holds the contract.

The contract names below load ``_base`` (and torch) on first access, not at package import, so
code that only locates or inspects a family module (plugin discovery, ``vertebra list``) stays
torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {"Backbone": "._base", "BackboneMeta": "._base", "StridePlan": "._base", "make_divisible": "._base",
          "inference_folding": "._folding"}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Backbone, BackboneMeta, StridePlan, make_divisible
    from ._folding import inference_folding


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
