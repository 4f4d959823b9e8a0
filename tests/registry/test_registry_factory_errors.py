"""A plugin's factory that fails, or whose ``feature_info`` lies, is refused with a typed error
naming the plugin — at build time, on the meta device, not at the first forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vertebra import registry
from vertebra.errors import ConfigError, IncompatibleError, PluginError
from vertebra.features import FeatureInfo, FeatureSpec
from vertebra.plugins import hookimpl


def _plugin(name, backbones=None, heads=None):
    class Plugin:
        @hookimpl
        def vertebra_register_backbones(self, register):
            for key, factory in (backbones or {}).items():
                register(key, factory)

        @hookimpl
        def vertebra_register_heads(self, register):
            for key, factory in (heads or {}).items():
                register(key, factory)

    registry.register_plugin(Plugin(), name)


def raising_backbone(*, width: int = 4):
    """Raises a plain ValueError, as a third-party factory with its own checks would."""
    raise ValueError(f"width {width} is not supported by this backbone")


def raising_head(backbone, *, num_classes: int = 3):
    """Raises a TypeError that no argument explains."""
    return len(num_classes)


@pytest.mark.parametrize("build, kind, name, cause", [
    (lambda: registry.build_backbone("raising", width=3), "backbone", "raising",
     "ValueError: width 3 is not supported"),
    (lambda: registry.build("raising_head", backbone="pyramid"), "head", "raising_head",
     "TypeError: object of type 'int' has no len()"),
])
def test_a_raw_error_from_a_plugin_factory_becomes_a_plugin_error_naming_plugin_and_cause(fake, build, kind, name,
                                                                                          cause):
    _plugin("thirdparty", backbones={"raising": raising_backbone}, heads={"raising_head": raising_head})
    with pytest.raises(PluginError) as info:
        build()
    message = str(info.value)
    assert f"{kind} {name!r}" in message and "plugin 'thirdparty'" in message and cause in message
    assert isinstance(info.value.__cause__, (ValueError, TypeError))


def test_environment_errors_from_a_factory_propagate_unwrapped(fake):
    def offline(*, width: int = 4):
        """Fails like a factory that downloads weights without a network."""
        raise ConnectionError("no network")

    _plugin("offline", backbones={"offline": offline})
    with pytest.raises(ConnectionError, match="no network"):
        registry.build_backbone("offline")


def test_config_errors_from_a_factory_stay_config_errors(fake):
    with pytest.raises(ConfigError, match="output_stride must be one of"):
        registry.build_backbone("pyramid", output_stride=4)


# -- feature_info that does not match forward -------------------------------------------------------
class Lying(nn.Module):
    """A backbone whose feature_info claims one thing, while forward returns what ``produce`` makes."""

    in_channels = 3

    def __init__(self, declared, produce):
        super().__init__()
        self.feature_info = FeatureInfo(declared)
        self.out_channels = declared[-1].channels
        self.conv = nn.Conv2d(3, 4, 1)
        self.produce = produce

    def forward(self, x):
        return self.produce(x)


def _pyramid_levels(x, channels=(4, 8, 16)):
    h, w = x.shape[-2:]
    return {f"C{i + 1}": x.new_empty(x.shape[0], c, -(-h // 2 ** (i + 1)), -(-w // 2 ** (i + 1)))
            for i, c in enumerate(channels)}


DECLARED = [FeatureSpec("C1", 4, 2, 0), FeatureSpec("C2", 8, 4, 1), FeatureSpec("C3", 16, 8, 2)]


@pytest.mark.parametrize("produce, match", [
    (lambda x: _pyramid_levels(x, (4, 8, 12)), r"level 'C3'.*declares 16 channels.*produced 12 channels"),
    (lambda x: {k: v for k, v in _pyramid_levels(x).items() if k != "C2"}, r"levels \['C1', 'C2', 'C3'\].*"
                                                                             r"produced \['C1', 'C3'\]"),
    (lambda x: {**_pyramid_levels(x), "C3": x.new_empty(x.shape[0], 16, 1, 1)},
     r"level 'C3'.*stride 8.*produced .*1x1"),
    (lambda x: list(_pyramid_levels(x).values()), r"returned a list, not a mapping"),
])
def test_a_backbone_whose_forward_disagrees_with_feature_info_is_refused_at_build(fake, produce, match):
    _plugin("liar", backbones={"lying": lambda **kw: Lying(DECLARED, produce)})
    with pytest.raises(IncompatibleError, match=match) as info:
        registry.build("pool", backbone="lying")
    assert "'liar:lying'" in str(info.value) or "'lying'" in str(info.value)


def test_the_forward_check_is_cached_per_backbone_config(fake, monkeypatch):
    calls = []

    def counting(x):
        calls.append(x.device.type)
        return _pyramid_levels(x)

    _plugin("honest", backbones={"honest": lambda **kw: Lying(DECLARED, counting)})
    registry.build("pool", backbone="honest")
    registry.build("pool", backbone="honest", num_classes=7)  # same backbone config: no second probe
    assert calls == ["meta"]
    model = registry.build("pool", backbone="honest")
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5)
