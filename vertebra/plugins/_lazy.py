"""Lazy factory references: register a factory by name without importing (torch-heavy) code.

``lazy("package.module:function")`` is a callable that stands in for ``function``: it imports
``package.module`` on the first call, or on the first access to its signature (``inspect.signature``
works), docstring, annotations or any other attribute, and from then on forwards to the real
function.  Until then only the module's *source file* is read, never imported, so
``vertebra list`` stays fast:

* :attr:`LazyFactory.summary` (the first docstring line, for the ``SUMMARY`` column) is read with
  :mod:`ast` from the ``def`` (or ``class``) of that name at the top level of the module's source;
* :func:`module_exports` reads a module's ``__all__`` the same way (it must be a literal list or
  tuple of strings), so the built-in plugin can register every entry without importing a family.

The file is located without importing the module *or its parent packages* (a parent's
``__init__`` may import torch): each package level is looked up with ``PathFinder`` on the parent's
search locations, unless the parent is imported already.  Parsed files are cached per path and
modification time.

Failures, decided once for every plugin:

* a reference to a module that cannot be found fails at **discovery**: ``register(name, lazy(...))``
  raises :class:`~vertebra.errors.PluginError`, so the plugin fails in isolation (a warning, nothing
  from it registered; an error with ``VERTEBRA_STRICT_PLUGINS=1``);
* an attribute the module does not have, or a module that raises while importing, fails at
  **first use** (build, describe, signature) with a :class:`~vertebra.errors.PluginError` naming
  the plugin and the reference.  Listing never imports, so it never sees these.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
from typing import Any

from ..errors import PluginError
from ..text import first_line
from ._guard import contained, describe_cause
from ._lock import first_use_lock

__all__ = ["LazyFactory", "lazy", "module_exports", "find_module_spec"]

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def find_module_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of module ``name`` found *without importing it or any parent package* (``None``: absent).

    ``importlib.util.find_spec("a.b")`` imports ``a`` first; here ``a``'s search locations are
    taken from its own spec instead, unless ``a`` is imported already (then its live ``__path__``).
    """
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__spec__", None)
    parent, _, _ = name.rpartition(".")
    try:
        if not parent or parent in sys.modules:
            return importlib.util.find_spec(name)
        parent_spec = find_module_spec(parent)
        if parent_spec is None or not parent_spec.submodule_search_locations:
            return None
        return importlib.machinery.PathFinder.find_spec(name, list(parent_spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None


_cache_lock = threading.Lock()
_tree_cache: dict[tuple[str, int], ast.Module | None] = {}


def _module_tree(spec: importlib.machinery.ModuleSpec) -> ast.Module | None:
    """The parsed source of the module (``None`` when it has no Python source, e.g. an extension)."""
    origin = spec.origin
    get_source = getattr(spec.loader, "get_source", None)
    if not origin or get_source is None:
        return None
    try:
        stamp = os.stat(origin).st_mtime_ns
    except OSError:
        stamp = -1
    key = (origin, stamp)
    with _cache_lock:
        if key in _tree_cache:
            return _tree_cache[key]
    source = get_source(spec.name)
    tree = None if source is None else ast.parse(source, filename=origin)
    with _cache_lock:
        _tree_cache[key] = tree
    return tree


def module_exports(name: str) -> tuple[str, ...]:
    """``__all__`` of module ``name``, read from its source without importing it.

    Raises ``ModuleNotFoundError`` (with ``.name``) when the module does not exist, and
    :class:`PluginError` when it has no source or its ``__all__`` is not one literal list or tuple
    of strings at the top level (the one form that can be read without running the module).
    """
    spec = find_module_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    tree = _module_tree(spec)
    if tree is None:
        raise PluginError(f"cannot read __all__ of {name} without importing it: no Python source "
                          f"at {spec.origin}")
    found = None
    for node in tree.body:
        target = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in target):
            found = node
    try:
        names = ast.literal_eval(found.value) if found is not None else None
    except ValueError:
        names = None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise PluginError(f"{name} ({spec.origin}) must define __all__ once at the top level as a literal "
                          f"list or tuple of strings, so its entries can be registered without importing it")
    return tuple(names)


class _Doc:
    """``__doc__``: the class docstring on the class, the real function's docstring on an instance."""

    def __init__(self, class_doc: str):
        self.class_doc = class_doc

    def __get__(self, obj: Any, owner: type | None = None) -> str | None:
        return self.class_doc if obj is None else obj.resolve().__doc__


class LazyFactory:
    __doc__ = _Doc("""A stand-in for a factory in another module, imported on first use; see :func:`lazy`.""")

    def __init__(self, reference: str):
        module, sep, attr = reference.partition(":") if isinstance(reference, str) else ("", "", "")
        if not sep or not _DOTTED.match(module) or not _IDENT.match(attr):
            raise PluginError(f"lazy factory reference {reference!r} must look like 'package.module:function'")
        self.reference = reference
        self.module_name = module
        self.attribute = attr
        self.plugin: str | None = None  # set by the loader when a plugin registers it, for messages
        self.__name__ = self.__qualname__ = attr
        self.__module__ = module
        self._target: Any = None

    def __repr__(self) -> str:
        return f"lazy({self.reference!r})"

    # -- without importing ----------------------------------------------------------------------
    def _spec(self) -> importlib.machinery.ModuleSpec:
        spec = find_module_spec(self.module_name)
        if spec is None:
            raise PluginError(f"{self._who()}lazy factory {self.reference!r}: module {self.module_name!r} "
                              f"not found (is the package installed, the name spelled right?)")
        return spec

    def check(self) -> None:
        """Fail now if the module cannot be found (called at registration; imports nothing)."""
        self._spec()

    @property
    def summary(self) -> str:
        """The first line of the target's docstring, read from the source (nothing is imported).

        Empty when the target is not a top-level ``def`` or ``class`` with a docstring (a name
        bound by assignment or import has no docstring in the source to read).
        """
        if self._target is not None:
            return first_line(self._target.__doc__)
        tree = _module_tree(self._spec())
        node = None
        for candidate in tree.body if tree is not None else ():
            if isinstance(candidate, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                    candidate.name == self.attribute:
                node = candidate  # the last definition wins, as when the module runs
        return first_line(ast.get_docstring(node)) if node is not None else ""

    # -- importing ------------------------------------------------------------------------------
    def resolve(self) -> Any:
        """The real factory, importing its module on first use.

        The import runs under the process-wide :data:`~vertebra.plugins._lock.first_use_lock`, not a
        lock of this factory: another factory's module may share its dependencies (see that module).
        """
        if self._target is None:
            with first_use_lock:
                if self._target is None:
                    self._target = self._import()
        return self._target

    def _import(self) -> Any:
        try:
            with contained():
                module = importlib.import_module(self.module_name)
        except Exception as exc:  # noqa: BLE001 - reported with the reference and the plugin
            raise PluginError(f"{self._who()}lazy factory {self.reference!r}: importing {self.module_name} "
                              f"failed: {describe_cause(exc)}") from exc
        try:
            target = getattr(module, self.attribute)
        except AttributeError as exc:
            raise PluginError(f"{self._who()}lazy factory {self.reference!r}: module {self.module_name} has "
                              f"no attribute {self.attribute!r}") from exc
        if not callable(target):
            raise PluginError(f"{self._who()}lazy factory {self.reference!r} is a {type(target).__name__}, "
                              f"not a callable factory")
        return target

    def _who(self) -> str:
        return f"plugin {self.plugin!r}: " if self.plugin else ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> Any:
        import inspect

        return inspect.signature(self.resolve())

    @property
    def __wrapped__(self) -> Any:
        return self.resolve()

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return getattr(self.resolve(), "__annotations__", {})

    def __getattr__(self, name: str) -> Any:
        # Only non-dunder attributes (``vertebra_requirements`` from @requires, say) are forwarded:
        # copy, pickle and friends probe dunders and must not trigger an import.
        if name.startswith("__") and name.endswith("__") or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)


def lazy(reference: str) -> LazyFactory:
    """A factory reference ``"package.module:function"`` that imports ``package.module`` on first use.

    Register it instead of the function to keep ``vertebra list`` from importing your module (and
    torch)::

        register("my_net", lazy("my_package.backbones:my_net"))

    Calling it, ``inspect.signature`` on it, its ``__doc__`` and any other attribute behave as the
    real function's; the ``SUMMARY`` column of ``vertebra list`` is read from the function's
    docstring in the source file without importing it.
    """
    return LazyFactory(reference)
