"""Fixtures for registry tests: a fresh registry per test and the fake plugin from registry_fakes."""

from __future__ import annotations

import pytest

from registry_fakes import CALLS, FakePlugin
from vertebra import registry

ENV_VARS = ("VERTEBRA_STRICT_PLUGINS", "VERTEBRA_DISABLE_PLUGIN_AUTOLOAD", "VERTEBRA_DISABLE_PLUGINS")


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Every test starts with an undiscovered registry and none of the plugin variables set."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    registry._reset()
    CALLS.clear()
    yield
    registry._reset()


@pytest.fixture
def fake(monkeypatch):
    """The registry with only the fake plugin (built-ins disabled, so results do not depend on them)."""
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra")
    registry.register_plugin(FakePlugin(), "fake")
    CALLS.clear()
    return registry
