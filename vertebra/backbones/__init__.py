"""Backbone families.  Each family is one file of architecture tables; ``_base`` holds the contract."""

from ._base import Backbone, BackboneMeta, StridePlan, make_divisible

__all__ = ["Backbone", "BackboneMeta", "StridePlan", "make_divisible"]
