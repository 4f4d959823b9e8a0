"""Named checkpoints as the weights package sees them: it asks, it never imports who answers.

Plugins register checkpoints and the registry keeps them, both above this package (they import it to
build and load models), so importing them here would close an import cycle.  This module states the
questions the loader asks about named checkpoints (:class:`NamedCheckpoints`), and the package root
names the module that answers them (``vertebra.lazy.provide``; the registry's
:mod:`vertebra.registry._weights`), imported when a name is first looked up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import UnknownNameError
from ..lazy import provided

if TYPE_CHECKING:  # pragma: no cover
    from .entry import WeightsEntry

__all__ = ["NamedCheckpoints", "QUESTION", "checkpoints", "named_weights", "get_weights_entry"]

QUESTION = "named checkpoints"


class NamedCheckpoints(Protocol):
    """What the loader needs from whoever keeps the registered checkpoints."""

    def named(self) -> dict[str, WeightsEntry]:
        """Every registered entry by the name users pass (``plugin:name`` when two plugins share one)."""

    def lookup(self, name: str) -> WeightsEntry:
        """The entry called ``name`` (bare or ``plugin:name``); :class:`UnknownNameError` otherwise."""

    def backbone_options(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Every keyword argument the backbone of a built model's ``config`` was called with, defaults included."""


def checkpoints() -> NamedCheckpoints:
    """The answering module (the registry's, unless a partial installation lacks it)."""
    return cast(NamedCheckpoints, provided(QUESTION))


def named_weights() -> dict[str, WeightsEntry]:
    """Every registered checkpoint, by name (a fresh dict; mutating it changes nothing).

    A name two plugins both register appears once per plugin, qualified (``plugin:name``).
    """
    return checkpoints().named()


def get_weights_entry(name: str) -> WeightsEntry:
    """The entry called ``name`` (or ``plugin:name``); :class:`UnknownNameError` with close matches otherwise."""
    try:
        return checkpoints().lookup(name)
    except UnknownNameError as error:
        error.args = (error.args[0] + " (or pass the path of a .pth, .pt or .safetensors file)",)
        raise
