"""Discovery: built-in first, entry points from dist-info folders, the three environment variables, dedupe."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from plugin_fakes import plugin_source
from vertebra import registry
from vertebra.errors import PluginError
from vertebra.plugins import PluginWarning, _loader
from vertebra.plugins.testing import mounted, write_distribution


def _status(name):
    return next(p for p in registry.plugins() if p.name == name)


def test_builtin_plugin_loads_first_and_registers_the_families():
    """Needs the built-in families (vertebra.backbones.*, vertebra.heads.*)."""
    first = registry.plugins()[0]
    assert (first.name, first.distribution, first.status) == ("vertebra", "vertebra", "loaded")
    assert {"efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_large"} <= set(first.backbones)
    assert {"classifier", "lraspp", "fasterrcnn_fpn"} <= set(first.heads)
    assert registry.entry("backbone", "efficientnet_b0").plugin == "vertebra"


def test_entry_point_plugin_is_discovered_with_distribution_and_version(make_plugin, no_builtins):
    name, module = make_plugin(plugin_source(backbones=["alpha_net"], heads=["alpha_head"]),
                               ep="alpha", dist="alpha-dist", version="2.3.4")
    assert module not in sys.modules  # discovery is lazy: nothing imported yet
    assert registry.list_backbones() == ["alpha_net"] and registry.list_heads() == ["alpha_head"]
    assert module in sys.modules
    info = _status("alpha")
    assert (info.distribution, info.version, info.status) == ("alpha-dist", "2.3.4", "loaded")
    assert info.source == f"entry point alpha = {module}"
    entry = registry.entry("backbone", "alpha:alpha_net")
    assert (entry.plugin, entry.distribution, entry.version) == ("alpha", "alpha-dist", "2.3.4")


def test_discovery_happens_once_until_reset(make_plugin, no_builtins, tmp_path):
    make_plugin(plugin_source(backbones=["first_net"]))
    assert registry.list_backbones() == ["first_net"]
    make_plugin(plugin_source(backbones=["second_net"]), mount=False, root=tmp_path / "late")
    sys.path.insert(0, str(tmp_path / "late"))
    try:
        assert registry.list_backbones() == ["first_net"]  # cached: not re-discovered on every call
        registry._reset()
        assert registry.list_backbones() == ["first_net", "second_net"]
    finally:
        sys.path.remove(str(tmp_path / "late"))


def test_autoload_disabled_loads_builtins_only(make_plugin, monkeypatch):
    """The built-in part needs the built-in families."""
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGIN_AUTOLOAD", "1")
    name, module = make_plugin(plugin_source(backbones=["never_net"]))
    assert "never_net" not in registry.list_backbones()
    assert "efficientnet_b0" in registry.list_backbones()
    info = _status(name)
    assert info.status == "disabled" and "VERTEBRA_DISABLE_PLUGIN_AUTOLOAD=1" in info.detail
    assert module not in sys.modules  # never imported
    assert _status("vertebra").status == "loaded"


def test_disable_named_plugins(make_plugin, monkeypatch):
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra, aaa,bbb")
    _, module_a = make_plugin(plugin_source(backbones=["a_net"]), ep="aaa")
    make_plugin(plugin_source(backbones=["b_net"]), ep="bbb")
    make_plugin(plugin_source(backbones=["c_net"]), ep="ccc")
    assert registry.list_backbones() == ["c_net"]
    assert [(p.name, p.status) for p in registry.plugins()] == [
        ("vertebra", "disabled"), ("aaa", "disabled"), ("bbb", "disabled"), ("ccc", "loaded")]
    assert "VERTEBRA_DISABLE_PLUGINS" in _status("aaa").detail
    assert module_a not in sys.modules


def test_disabling_an_unknown_plugin_warns(make_plugin, monkeypatch):
    monkeypatch.setenv("VERTEBRA_DISABLE_PLUGINS", "vertebra,typo_plugin")
    make_plugin(plugin_source(backbones=["a_net"]), ep="real")
    with pytest.warns(PluginWarning, match="names 'typo_plugin', but no plugin has that name"):
        registry.list_backbones()


def test_same_distribution_twice_on_sys_path_loads_once(tmp_path, no_builtins):
    source = plugin_source(backbones=["twice_net"])
    roots = [write_distribution(tmp_path / where, "twice-dist", "1.0", {"twice": "vfake_twice_mod"},
                                {"vfake_twice_mod": source}) for where in ("site", "checkout")]
    with mounted(*roots):
        assert registry.list_backbones() == ["twice_net"]
        assert [p.name for p in registry.plugins()] == ["vertebra", "twice"]
        assert _status("twice").status == "loaded"


def test_duplicate_entry_points_are_deduplicated(monkeypatch):
    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}
            self.version = "1.0"

    def ep(name, value, dist):
        point = EntryPoint(name, value, "vertebra")
        return point._for(dist) if hasattr(point, "_for") else point

    twice = [ep("dup", "json", Dist("Dup_Dist")), ep("dup", "json", Dist("dup-dist")),
             ep("other", "json", Dist("other-dist"))]
    monkeypatch.setattr(_loader, "_entry_points", lambda: twice)
    names = [c.name for c in _loader.discover()]
    assert names == ["vertebra", "dup", "other"]


def test_same_plugin_name_from_two_distributions_keeps_the_first(make_plugin, no_builtins):
    make_plugin(plugin_source(backbones=["one_net"]), ep="clash", dist="one-dist")
    make_plugin(plugin_source(backbones=["two_net"]), ep="clash", dist="two-dist")
    with pytest.warns(PluginWarning, match="'clash'.*uses a plugin name that another plugin already took"):
        names = registry.list_backbones()
    assert len(names) == 1
    assert [p.status for p in registry.plugins() if p.name == "clash"] == ["loaded", "failed"]


def test_strict_mode_turns_a_failure_into_plugin_error(make_plugin, monkeypatch, no_builtins):
    monkeypatch.setenv("VERTEBRA_STRICT_PLUGINS", "1")
    make_plugin("import vertebra_no_such_module_xyz\n", ep="broken", dist="broken-dist", version="0.9")
    with pytest.raises(PluginError) as info:
        registry.list_backbones()
    message = str(info.value)
    for part in ("'broken'", "broken-dist 0.9", "failed to import", "ModuleNotFoundError",
                 "VERTEBRA_STRICT_PLUGINS=1"):
        assert part in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_strict_mode_refuses_duplicate_names(make_plugin, monkeypatch, no_builtins):
    monkeypatch.setenv("VERTEBRA_STRICT_PLUGINS", "true")
    make_plugin(plugin_source(backbones=["shared_net"]), ep="one")
    make_plugin(plugin_source(backbones=["shared_net"]), ep="two")
    with pytest.raises(PluginError, match="'two' registers names another plugin registered too.*shared_net"):
        registry.list_backbones()


def test_settings_parse_the_environment():
    settings = _loader.Settings.from_env({"VERTEBRA_STRICT_PLUGINS": "yes",
                                          "VERTEBRA_DISABLE_PLUGIN_AUTOLOAD": "0",
                                          "VERTEBRA_DISABLE_PLUGINS": " a, ,b "})
    assert settings == _loader.Settings(strict=True, autoload=True, disabled=frozenset({"a", "b"}))
    assert _loader.Settings.from_env({}) == _loader.Settings()


def test_builtin_skips_a_family_module_that_does_not_exist(monkeypatch):
    """Needs the built-in families: the others stay registered when one module is absent."""
    from vertebra.plugins import builtin

    monkeypatch.setattr(builtin, "BACKBONE_MODULES",
                        builtin.BACKBONE_MODULES + ("vertebra.backbones.no_such_family",))
    with pytest.warns(PluginWarning, match="vertebra.backbones.no_such_family is missing"):
        names = registry.list_backbones()
    assert "efficientnet_b0" in names and _status("vertebra").status == "loaded"
    registry._reset()
    monkeypatch.setenv("VERTEBRA_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="'vertebra'.*no_such_family"):
        registry.list_backbones()
