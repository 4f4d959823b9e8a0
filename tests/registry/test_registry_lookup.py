"""Names: listing with patterns, qualified names, suggestions, and the errors for unknown names and keys."""

from __future__ import annotations

import pytest

from vertebra import registry
from vertebra.errors import ConfigError, PluginError, UnknownNameError, VertebraError

from registry_fakes import CALLS, FakePlugin


def test_lists_are_sorted_and_filtered_by_fnmatch(fake):
    assert registry.list_backbones() == ["flat", "picky", "pyramid"]
    assert registry.list_heads() == ["dense", "pool"]
    assert registry.list_backbones("p*") == ["picky", "pyramid"]
    assert registry.list_backbones("fake:fl*") == ["flat"]  # patterns also match qualified names
    assert registry.list_heads("nothing*") == []


def test_qualified_names_resolve_to_the_same_entry(fake):
    plain = registry.entry("backbone", "pyramid")
    assert registry.entry("backbone", "fake:pyramid") is plain
    assert plain.qualified_name == "fake:pyramid"
    assert registry.build_backbone("fake:pyramid").feature_info.names() == ["C1", "C2", "C3", "C4", "C5"]


def test_unknown_name_suggests_close_matches(fake):
    with pytest.raises(UnknownNameError, match=r"did you mean pyramid\?") as info:
        registry.build_backbone("pyramd")
    assert info.value.suggestions == ["pyramid"]
    assert isinstance(info.value, LookupError) and isinstance(info.value, VertebraError)


def test_unknown_name_without_close_match_lists_registered_names(fake):
    with pytest.raises(UnknownNameError, match="registered backbones: flat, picky, pyramid"):
        registry.build_backbone("resnet50")


def test_a_head_name_used_as_backbone_says_so(fake):
    with pytest.raises(UnknownNameError, match="'dense' is a head, not a backbone"):
        registry.build_backbone("dense")


def test_unknown_plugin_in_qualified_name(fake):
    with pytest.raises(UnknownNameError, match="unknown plugin 'faek'.*did you mean fake"):
        registry.build_backbone("faek:pyramid")
    with pytest.raises(UnknownNameError, match="unknown backbone 'fake:pyrmid'.*fake:pyramid"):
        registry.build_backbone("fake:pyrmid")


def test_unknown_kind_is_a_config_error(fake):
    with pytest.raises(ConfigError, match="kind must be one of backbone, head"):
        registry.entry("neck", "pyramid")


def test_unknown_keyword_lists_valid_ones_and_suggests(fake):
    with pytest.raises(ConfigError) as info:
        registry.build_backbone("pyramid", output_strid=16)
    message = str(info.value)
    assert "'output_strid' -> did you mean 'output_stride'?" in message
    assert "valid arguments: levels, out_indices, output_stride, width" in message
    assert info.value.path == "output_strid"


def test_unknown_head_keyword_is_refused_before_building(fake):
    with pytest.raises(ConfigError, match="unknown argument 'num_clases' for head 'pool'.*'num_classes'"):
        registry.build("pool", backbone="pyramid", num_clases=3)
    assert CALLS == []  # refused before the backbone factory ran at all


def test_wrong_type_becomes_config_error_naming_the_argument(fake):
    with pytest.raises(ConfigError) as info:
        registry.build_backbone("pyramid", levels="5")
    assert info.value.path == "levels"
    assert "levels='5' is a str, expected int" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_type_error_that_no_argument_explains_is_a_plugin_error_naming_the_plugin(fake):
    def broken(*, width: int = 4):
        """Has a bug unrelated to its arguments."""
        return len(5)

    class Broken:
        from vertebra.plugins import hookimpl

        @hookimpl
        def vertebra_register_backbones(self, register):
            register("broken", broken)

    registry.register_plugin(Broken(), "broken")
    with pytest.raises(PluginError, match="backbone 'broken' from plugin 'broken'.*TypeError: .*has no len") as info:
        registry.build_backbone("broken", width=3)
    assert isinstance(info.value.__cause__, TypeError)


def test_invalid_value_error_from_the_factory_keeps_its_path(fake):
    with pytest.raises(ConfigError, match=r"^output_stride: output_stride must be one of \(8, 16, 32\)"):
        registry.build_backbone("pyramid", output_stride=4)


def test_missing_required_argument(fake):
    def needs(*, depth: int):
        """Needs depth."""
        raise AssertionError("never called")

    class Needs:
        from vertebra.plugins import hookimpl

        @hookimpl
        def vertebra_register_backbones(self, register):
            register("needs", needs)

    registry.register_plugin(Needs(), "needs")
    with pytest.raises(ConfigError, match="needs argument depth"):
        registry.build_backbone("needs")


def test_duplicate_names_refuse_bare_lookup_but_qualified_names_work(fake):
    with pytest.warns(UserWarning, match="registers names another plugin registered too"):
        registry.register_plugin(FakePlugin(), "other")
    with pytest.raises(PluginError) as info:
        registry.build_backbone("pyramid")
    assert "plugin 'fake'" in str(info.value) and "plugin 'other'" in str(info.value)
    assert "'fake:pyramid' or 'other:pyramid'" in str(info.value)
    assert registry.build_backbone("other:pyramid").config == {"name": "other:pyramid"}
    assert "fake:pyramid" in registry.list_backbones() and "other:pyramid" in registry.list_backbones()
    assert "pyramid" not in registry.list_backbones()


def test_unregister_plugin_removes_its_entries(fake):
    registry.unregister_plugin("fake")
    assert registry.list_backbones() == []
    with pytest.raises(UnknownNameError):
        registry.unregister_plugin("fake")


def test_builtin_suggestion_for_efficientnet_b33():
    """Needs the built-in EfficientNet family (vertebra.backbones.efficientnet)."""
    with pytest.raises(UnknownNameError) as info:
        registry.build_backbone("efficientnet_b33")
    assert info.value.suggestions[0] == "efficientnet_b3"
    assert "did you mean efficientnet_b3" in str(info.value)
