"""Package attributes that import their module on first access.

``import vertebra`` (and ``vertebra list``, plugin discovery) must stay torch-free, yet the packages
should offer their public names at the top (``vertebra.data.CocoDetection``).  A package states
where each name lives, as data, and :func:`lazy_exports` gives it the module ``__getattr__`` /
``__dir__`` pair (PEP 562) that imports the home module once and caches the value.

The same idea serves a lower layer that needs an answer only a higher one has (the weights loader
asks which checkpoints the plugins registered, but the registry sits above it and imports it): the
package root states, with :func:`provide`, which module answers a named question, and the lower
layer asks with :func:`provided`.  The answer's module is imported on that first question, never
at ``import vertebra``, and no module imports one above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "provide", "provided"]


def lazy_exports(package: str, homes: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose names live in ``homes`` (name -> relative module;
    a name equal to its module's last component is that submodule).

    ``namespace`` is the package's ``globals()``: a resolved value is stored there, so the second
    access is an ordinary attribute lookup.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home, package)
        # a name that is its home's own last component is the submodule itself (``vertebra.registry``)
        value = module if home.rpartition(".")[2] == name else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__


_PROVIDERS: dict[str, tuple[str, str]] = {}  # question -> (module, package it is relative to)


def provide(question: str, home: str, package: str) -> None:
    """State that module ``home`` (relative to ``package``) answers ``question``; nothing is imported yet."""
    _PROVIDERS[question] = (home, package)


def provided(question: str) -> Any:
    """The module that answers ``question`` (see :func:`provide`), imported on first use.

    Raises:
        LookupError: nothing provides ``question`` (a partial installation).
    """
    if question not in _PROVIDERS:
        raise LookupError(f"nothing in this installation answers {question!r}")
    home, package = _PROVIDERS[question]
    return importlib.import_module(home, package)
