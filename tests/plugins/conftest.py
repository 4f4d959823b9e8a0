"""Fixtures for plugin tests: a fresh registry per test and fake plugins installed as real entry points."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from vertebra.plugins.testing import isolated_registry, mounted, write_distribution


@pytest.fixture(autouse=True)
def fresh_registry():
    with isolated_registry():
        yield


@pytest.fixture
def no_builtins(monkeypatch):
    """Skip the built-in plugin so a test sees only its own fakes (and runs fast)."""
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra")


@pytest.fixture
def make_plugin(tmp_path):
    """``make_plugin(source, ep=..., dist=..., version=...)`` writes a module + dist-info and mounts it.

    Returns ``(plugin name, module name)``.  Module names are unique, so no test sees another's
    cached import.
    """
    with contextlib.ExitStack() as stack:
        def make(source: str, *, ep: str | None = None, dist: str | None = None, version: str = "1.0",
                 mount: bool = True, root=None):
            module = f"vfake_{uuid.uuid4().hex[:10]}"
            ep = ep or module
            root = root or tmp_path / module
            write_distribution(root, dist or f"fake-{module}", version, {ep: module}, {module: source})
            if mount:
                stack.enter_context(mounted(root))
            return ep, module

        yield make
