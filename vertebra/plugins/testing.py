"""Test helpers for plugin authors (and vertebra's own tests): a real entry point without ``pip install``.

:func:`write_distribution` writes what an installer would: a ``<name>-<version>.dist-info`` folder with
``METADATA`` and ``entry_points.txt`` next to the plugin's modules.  Put that folder on ``sys.path``
with :func:`mounted` and ``importlib.metadata`` finds the entry point exactly as it finds an
installed distribution's, so discovery is exercised for real::

    root = write_distribution(tmp_path, "my-plugin", "1.0", {"mine": "my_plugin_mod"},
                              modules={"my_plugin_mod": PLUGIN_SOURCE})
    with mounted(root):
        assert "my_net" in registry.list_backbones()

:func:`check_backbone` runs the whole feature-contract battery on a backbone (a registered name or a
factory) and raises one :class:`~vertebra.errors.ConformanceError` listing every violation::

    check_backbone("my_plugin:my_net", kwargs={"width": 4}, heads=["classifier", "lraspp"])

This module sits above the registry and the deployment path it exercises (tests/test_architecture.py
gives it its own layer); nothing in vertebra imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Iterator, Mapping

from ._conformance import CHECKS, ConformanceReport, check_backbone
from ._loader import ENV_DISABLE, ENV_NO_AUTOLOAD, ENV_STRICT, rediscover

__all__ = ["write_distribution", "mounted", "isolated_registry", "PLUGIN_ENV_VARS", "check_backbone",
           "ConformanceReport", "CHECKS"]

# The environment variables that change what discovery loads (see docs/plugins.md).
PLUGIN_ENV_VARS = (ENV_STRICT, ENV_NO_AUTOLOAD, ENV_DISABLE)


def write_distribution(root: str | Path, name: str, version: str, entry_points: Mapping[str, str],
                       modules: Mapping[str, str] | None = None) -> Path:
    """Write modules and a ``*.dist-info`` declaring ``entry_points`` (group ``vertebra``) under ``root``.

    ``modules`` maps a module name (``pkg.plugin`` makes a package folder) to its source text.
    Returns ``root``, ready for :func:`mounted`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for module, source in (modules or {}).items():
        parts = module.split(".")
        folder = root.joinpath(*parts[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parts)):
            init = root.joinpath(*parts[:depth], "__init__.py")
            if not init.exists():
                init.write_text("")
        (folder / f"{parts[-1]}.py").write_text(textwrap.dedent(source))
    info = root / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[vertebra]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@contextlib.contextmanager
def mounted(*roots: str | Path) -> Iterator[None]:
    """Put ``roots`` on ``sys.path`` and start registry discovery afresh; undo both on exit.

    Modules imported from ``roots`` are dropped from ``sys.modules`` afterwards, so the next test
    imports them anew.
    """
    paths = [str(Path(r)) for r in roots]
    before = set(sys.modules)
    sys.path[:0] = paths
    importlib.invalidate_caches()
    rediscover()
    try:
        yield
    finally:
        for path in paths:
            with contextlib.suppress(ValueError):
                sys.path.remove(path)
        for module in set(sys.modules) - before:
            file = getattr(sys.modules[module], "__file__", None) or ""
            if any(file.startswith(p) for p in paths):
                del sys.modules[module]
        importlib.invalidate_caches()
        rediscover()


@contextlib.contextmanager
def isolated_registry() -> Iterator[None]:
    """An undiscovered registry with none of :data:`PLUGIN_ENV_VARS` set; both restored on exit.

    For a test that must not see what an earlier test registered or which plugins the caller's
    environment disables (pytest's ``monkeypatch`` may still set variables inside it).
    """
    saved = {var: os.environ.pop(var) for var in PLUGIN_ENV_VARS if var in os.environ}
    rediscover()
    try:
        yield
    finally:
        for var in PLUGIN_ENV_VARS:
            os.environ.pop(var, None)
        os.environ.update(saved)
        rediscover()
