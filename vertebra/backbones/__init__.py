"""Backbone families.  Each family is one file of architecture tables; ``_base`` holds the contract.

The contract names below load ``_base`` (and torch) on first access, not at package import, so
code that only locates or inspects a family module (plugin discovery, ``vertebra list``) stays
torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Backbone", "BackboneMeta", "StridePlan", "make_divisible"]

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Backbone, BackboneMeta, StridePlan, make_divisible


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("._base", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
