"""The registry's answers to :mod:`vertebra.weights`' questions about named checkpoints.

The weights package sits below the registry and cannot import it; the package root names this
module as the one that answers (:class:`vertebra.weights.names.NamedCheckpoints`), so the loader
finds plugin checkpoints and the options a model's backbone was built with
(:func:`~vertebra.registry._build.resolved_backbone_options`) through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._build import resolved_backbone_options
from ._catalog import catalog

if TYPE_CHECKING:  # pragma: no cover
    from ..weights.entry import WeightsEntry

__all__ = ["named", "lookup", "backbone_options"]


def named() -> dict[str, WeightsEntry]:
    table = catalog()
    return {table.display_name(entry): entry.factory for entry in table.entries("weights")}


def lookup(name: str) -> WeightsEntry:
    return catalog().lookup("weights", name).factory


def backbone_options(config: Mapping[str, Any]) -> dict[str, Any]:
    return resolved_backbone_options(config)
