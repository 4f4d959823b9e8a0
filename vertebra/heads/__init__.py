"""Heads: modules that turn a backbone's feature levels into a classifier, detector or segmenter."""

from ._base import Requirements, check_requirements, requirements_of, requires

__all__ = ["Requirements", "requires", "requirements_of", "check_requirements"]
