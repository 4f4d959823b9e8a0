"""Fixtures for registry tests: a fresh registry per test and the fake plugin from registry_fakes."""

from __future__ import annotations

import pytest

from registry_fakes import CALLS, FakePlugin
from vertebra import registry
from vertebra.plugins.testing import isolated_registry


@pytest.fixture(autouse=True)
def fresh_registry():
    """Every test starts with an undiscovered registry and none of the plugin variables set."""
    with isolated_registry():
        CALLS.clear()
        yield


@pytest.fixture
def fake(monkeypatch):
    """The registry with only the fake plugin (built-ins disabled, so results do not depend on them)."""
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra")
    registry.register_plugin(FakePlugin(), "fake")
    CALLS.clear()
    return registry
