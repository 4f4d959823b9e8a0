"""Backbone families.  Each family is one file of architecture tables; ``_base`` holds the contract.

The contract names below load ``_base`` (and torch) on first access, not at package import, so
code that only locates or inspects a family module (plugin discovery, ``vertebra list``) stays
torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_HOMES = {"Backbone": "._base", "BackboneMeta": "._base", "StridePlan": "._base", "make_divisible": "._base"}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # pragma: no cover
    from ._base import Backbone, BackboneMeta, StridePlan, make_divisible

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
