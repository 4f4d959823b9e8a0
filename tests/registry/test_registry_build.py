"""The head flow: requirements merged into the backbone, checked on meta first, .config, weights=."""

from __future__ import annotations

import pytest
import torch

from registry_fakes import CALLS
from vertebra import registry
from vertebra.errors import ConfigError, IncompatibleError, PluginError


def test_head_requirements_reach_the_backbone(fake):
    model = registry.build("dense", backbone="pyramid", num_classes=4)
    assert model.backbone.feature_info.strides() == [2, 4, 8, 16, 16]  # output_stride=16 from the head
    assert CALLS == [("pyramid", "meta"), ("pyramid", "cpu")]  # probed on meta, then built once for real
    torch.manual_seed(0)
    out = model.eval()(torch.randn(1, 3, 64, 80))
    assert out["out"].shape == (1, 4, 64, 80)


def test_head_option_changes_the_requirement(fake):
    model = registry.build("dense", backbone="pyramid", output_stride=8)
    assert model.backbone.output_stride == 8


def test_explicit_equal_value_is_accepted(fake):
    model = registry.build("dense", backbone={"name": "pyramid", "output_stride": 16})
    assert model.backbone.output_stride == 16


def test_conflicting_backbone_value_names_head_backbone_rule_and_fix(fake):
    with pytest.raises(IncompatibleError) as info:
        registry.build("dense", backbone={"name": "pyramid", "output_stride": 32})
    message = str(info.value)
    for part in ("head 'dense'", "backbone 'pyramid'", "output_stride=16", "backbone.output_stride=32",
                 "remove backbone.output_stride"):
        assert part in message
    assert CALLS == []  # refused before any build


def test_missing_stride_level_is_refused_on_meta_with_the_out_indices_fix(fake):
    with pytest.raises(IncompatibleError) as info:
        registry.build("dense", backbone={"name": "pyramid", "out_indices": [3, 4]})
    message = str(info.value)
    assert "stride 8" in message and "backbone.out_indices" in message and "2: C3 (stride 8)" in message
    assert CALLS == [("pyramid", "meta")]  # never built for real


def test_too_few_levels(fake):
    with pytest.raises(IncompatibleError, match="needs level.*stride 8.*include them in backbone.out_indices"):
        registry.build("dense", backbone={"name": "pyramid", "out_indices": [4]})
    with pytest.raises(IncompatibleError, match="no such level; choose another backbone"):
        registry.build("dense", backbone={"name": "pyramid", "levels": 2})


def test_min_levels_rule(fake, monkeypatch):
    from vertebra.heads import Requirements

    import registry_fakes

    monkeypatch.setattr(registry_fakes.pool, "vertebra_requirements",
                        lambda **kw: Requirements(min_levels=3), raising=False)
    with pytest.raises(IncompatibleError, match="at least 3 feature levels.*returns 2.*out_indices"):
        registry.build("pool", backbone={"name": "pyramid", "out_indices": [0, 1]})
    with pytest.raises(IncompatibleError, match="at least 3 feature levels.*choose a backbone with more levels"):
        registry.build("pool", backbone="flat")


def test_backbone_without_the_required_argument(fake):
    with pytest.raises(IncompatibleError, match="'flat' has no 'output_stride' argument"):
        registry.build("dense", backbone="flat")


def test_backbone_refusing_the_injected_value_is_incompatible(fake):
    with pytest.raises(IncompatibleError, match="which the backbone refuses.*only output_stride=32"):
        registry.build("dense", backbone="picky")


def test_user_value_the_backbone_refuses_stays_a_config_error_with_dotted_path(fake):
    with pytest.raises(ConfigError) as info:
        registry.build("pool", backbone={"name": "picky", "output_stride": 16})
    assert info.value.path == "backbone.output_stride"
    assert str(info.value).startswith("backbone.output_stride: picky supports only")


def test_unknown_backbone_key_has_dotted_path(fake):
    with pytest.raises(ConfigError) as info:
        registry.build("pool", backbone={"name": "pyramid", "widht": 8})
    assert info.value.path == "backbone.widht" and "did you mean 'width'" in str(info.value)


def test_backbone_spec_errors(fake):
    with pytest.raises(ConfigError, match="needs a backbone"):
        registry.build("pool")
    with pytest.raises(ConfigError, match="needs a 'name' string"):
        registry.build("pool", backbone={"width": 8})
    with pytest.raises(ConfigError, match="must be a name or"):
        registry.build("pool", backbone=3)


def test_compatible_lists_exactly_the_fitting_backbones_and_caches(fake):
    assert registry.compatible("dense") == ["pyramid"]  # flat: no output_stride; picky: refuses 16
    assert registry.compatible("pool") == ["flat", "picky", "pyramid"]
    calls = len(CALLS)
    assert registry.compatible("dense") == ["pyramid"]
    assert len(CALLS) == calls  # cached per (head, backbone)
    assert all(device == "meta" for _, device in CALLS)
    assert registry.compatible("dense", output_stride=8) == ["pyramid"]


def test_every_pair_compatible_rejects_fails_to_build_with_incompatible_error(fake):
    for backbone in registry.list_backbones():
        if backbone not in registry.compatible("dense"):
            with pytest.raises(IncompatibleError):
                registry.build("dense", backbone=backbone)


def test_factory_returning_garbage_is_a_plugin_error(fake):
    class Bad:
        from vertebra.plugins import hookimpl

        @hookimpl
        def vertebra_register_backbones(self, register):
            register("not_a_module", lambda: "hello")

    registry.register_plugin(Bad(), "bad")
    with pytest.raises(PluginError, match="'bad:not_a_module'.*returned a str, not a torch.nn.Module"):
        registry.build_backbone("not_a_module")


def test_configs_are_plain_copies(fake):
    spec = {"name": "pyramid", "width": 8}
    model = registry.build("pool", backbone=spec, num_classes=2)
    spec["width"] = 99
    assert model.config == {"head": "pool", "backbone": {"name": "pyramid", "width": 8}, "num_classes": 2}
    assert model.backbone.config == {"name": "pyramid", "width": 8}


def test_weights_are_loaded_after_building(fake, tmp_path):
    torch.manual_seed(0)
    source = registry.build_backbone("pyramid", width=8)
    path = tmp_path / "pyramid.pth"
    torch.save(source.state_dict(), path)
    loaded = registry.build_backbone("pyramid", width=8, weights=str(path))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)

    model = registry.build("pool", backbone="pyramid", num_classes=3)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    again = registry.build("pool", backbone="pyramid", num_classes=3, weights=path)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))


def _register_meta_hostile(registry, name="hostile"):
    import registry_fakes

    def hostile(*, output_stride: int = 32, out_indices=None):
        """Needs real tensors while building (reads a value), so it cannot be probed on meta."""
        if torch.empty(0).device.type == "meta":
            raise NotImplementedError("cannot read values of meta tensors")
        return registry_fakes.pyramid(output_stride=output_stride, out_indices=out_indices)

    class Hostile:
        from vertebra.plugins import hookimpl

        @hookimpl
        def vertebra_register_backbones(self, register):
            register(name, hostile)

    registry.register_plugin(Hostile(), name)


def test_backbone_that_cannot_run_on_meta_is_checked_after_the_real_build(fake):
    _register_meta_hostile(fake)
    model = registry.build("dense", backbone="hostile")
    assert model.backbone.output_stride == 16
    with pytest.raises(IncompatibleError, match="stride 8"):
        registry.build("dense", backbone={"name": "hostile", "out_indices": [4]})


def test_compatible_skips_a_backbone_it_cannot_probe(fake):
    _register_meta_hostile(fake)
    assert registry.compatible("pool") == ["flat", "picky", "pyramid"]
