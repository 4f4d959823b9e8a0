"""A plugin cannot take a built-in name away: the bare name stays vertebra's (with a warning naming
the plugin), ``plugin:name`` reaches the plugin's entry; two third-party plugins stay ambiguous."""

from __future__ import annotations

import warnings

import pytest

from plugin_fakes import plugin_source
from vertebra import registry
from vertebra.errors import PluginError
from vertebra.plugins import PluginWarning


def test_builtin_names_win_the_bare_name_and_the_warning_names_the_shadowing_plugin(make_plugin):
    make_plugin(plugin_source(backbones=["mobilenet_v3_large", "own_net"], heads=["lraspp"]), ep="shadow",
                dist="shadow-dist", version="1.2")
    with pytest.warns(PluginWarning) as record:
        heads = registry.list_heads()
    message = " ".join(str(w.message) for w in record if "shadow" in str(w.message))
    for part in ("'shadow'", "shadow-dist 1.2", "backbone 'mobilenet_v3_large'", "head 'lraspp'",
                 "built-in", "'shadow:lraspp'"):
        assert part in message, part
    assert registry.entry("backbone", "mobilenet_v3_large").plugin == "vertebra"
    assert registry.entry("head", "lraspp").plugin == "vertebra"
    assert registry.entry("head", "shadow:lraspp").plugin == "shadow"  # the plugin's is still reachable
    assert "lraspp" in heads and "shadow:lraspp" in heads
    backbones = registry.list_backbones()
    assert "mobilenet_v3_large" in backbones and "shadow:mobilenet_v3_large" in backbones and "own_net" in backbones


def test_a_shipped_config_still_builds_when_a_plugin_shadows_its_names(make_plugin):
    make_plugin(plugin_source(backbones=["mobilenet_v3_small"], heads=["lraspp"]), ep="shadow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        with __import__("torch").device("meta"):
            model = registry.build_from_config({"head": "lraspp", "backbone": "mobilenet_v3_small",
                                                "num_classes": 3})
    assert model.config["head"] == "lraspp"
    with pytest.raises(PluginError, match="plugin 'shadow'.*NotImplementedError"):  # its fake, by qualified name
        registry.build_backbone("shadow:mobilenet_v3_small")


def test_two_third_party_plugins_with_one_name_stay_ambiguous(make_plugin, no_builtins):
    make_plugin(plugin_source(backbones=["twin_net"]), ep="first")
    make_plugin(plugin_source(backbones=["twin_net"]), ep="second")
    with pytest.warns(PluginWarning, match="Bare lookups of these names are refused"):
        registry.list_backbones()
    with pytest.raises(PluginError, match="'first:twin_net' or 'second:twin_net'"):
        registry.entry("backbone", "twin_net")


def test_strict_mode_makes_shadowing_a_builtin_an_error(make_plugin, monkeypatch):
    monkeypatch.setenv("VERTEBRA_STRICT_PLUGINS", "1")
    make_plugin(plugin_source(heads=["lraspp"]), ep="shadow")
    with pytest.raises(PluginError, match="'shadow'.*built-in: head 'lraspp'.*VERTEBRA_STRICT_PLUGINS=1"):
        registry.list_heads()
