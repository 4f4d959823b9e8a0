"""vertebra.plugins.testing.isolated_registry: what the plugin and registry test fixtures stand on."""

from __future__ import annotations

import os
import types

from vertebra import registry
from vertebra.plugins import hookimpl
from vertebra.plugins.testing import PLUGIN_ENV_VARS, isolated_registry


def _one_backbone_plugin(name: str) -> types.ModuleType:
    @hookimpl
    def vertebra_register_backbones(register):
        register(name, lambda **kwargs: None)

    plugin = types.ModuleType(f"fake_{name}")
    plugin.vertebra_register_backbones = vertebra_register_backbones
    return plugin


def test_isolated_registry_forgets_registrations_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra")
    monkeypatch.delenv("VERTEBRA_STRICT_PLUGINS", raising=False)
    registry.register_plugin(_one_backbone_plugin("outer_net"), "outer")
    assert registry.list_backbones() == ["outer_net"]
    with isolated_registry():
        assert not any(var in os.environ for var in PLUGIN_ENV_VARS)
        assert "outer_net" not in registry.list_backbones()
        assert "efficientnet_b0" in registry.list_backbones()  # built-ins no longer disabled
        os.environ["VERTEBRA_STRICT_PLUGINS"] = "1"  # set inside: gone afterwards
        registry.register_plugin(_one_backbone_plugin("inner_net"), "inner")
    assert os.environ["VERTEBRA_DISABLE_PLUGINS"] == "vertebra"
    assert "VERTEBRA_STRICT_PLUGINS" not in os.environ
    assert registry.list_backbones() == []  # discovery starts afresh: no inner_net, built-ins disabled again
