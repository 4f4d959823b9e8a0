"""describe(): kind, source, summary, arguments, and backbone figures computed on the meta device."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from registry_fakes import CALLS
from vertebra import registry
from vertebra.errors import ConfigError, UnknownNameError


def test_backbone_description(fake):
    d = registry.describe("pyramid")
    assert (d.kind, d.name, d.qualified_name, d.plugin) == ("backbone", "pyramid", "fake:pyramid", "fake")
    assert d.summary == "A tiny test pyramid: ``levels`` strided 3x3 convs."
    assert d.kwargs == {"width": 4, "out_indices": None, "output_stride": 32, "levels": 5}
    assert [(s.name, s.channels, s.stride) for s in d.levels] == [
        ("C1", 4, 2), ("C2", 8, 4), ("C3", 16, 8), ("C4", 32, 16), ("C5", 64, 32)]
    real = registry.build_backbone("pyramid")
    assert d.params == sum(p.numel() for p in real.parameters())
    assert d.input_size == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.params = 0


def test_describe_builds_on_meta_only(fake, monkeypatch):
    seen = []
    original = torch.nn.Module.register_parameter

    def spy(self, name, param):
        if param is not None:
            seen.append(param.device.type)
        return original(self, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", spy)
    registry.describe("pyramid")
    assert CALLS == [("pyramid", "meta")]
    assert seen and set(seen) == {"meta"}


def test_macs_are_counted(fake):
    d = registry.describe("pyramid")
    # first conv at 64x64 -> 32x32 output, 3x3x3 -> 4 channels: 32*32*4*27 MACs (BN not counted)
    assert d.macs is not None and d.macs >= 32 * 32 * 4 * 27


def test_head_description(fake):
    d = registry.describe("dense")
    assert d.kind == "head" and d.kwargs == {"num_classes": 3, "output_stride": 16}
    assert d.requirements.strides == (8,) and dict(d.requirements.backbone_kwargs) == {"output_stride": 16}
    assert d.levels == () and d.params is None


def test_describe_is_cached(fake):
    assert registry.describe("pyramid") is registry.describe("pyramid")
    assert len(CALLS) == 1


def test_describe_unknown_and_ambiguous(fake):
    with pytest.raises(UnknownNameError, match="unknown backbone or head 'pyramd'; did you mean pyramid"):
        registry.describe("pyramd")
    with pytest.raises(ConfigError, match="kind must be one of"):
        registry.describe("pyramid", kind="neck")

    class Both:
        from vertebra.plugins import hookimpl

        @hookimpl
        def vertebra_register_heads(self, register):
            import registry_fakes

            register("pyramid", registry_fakes.pool)

    registry.register_plugin(Both(), "both")
    with pytest.raises(ConfigError, match="both as a backbone and as a head; pass kind="):
        registry.describe("pyramid")
    assert registry.describe("pyramid", kind="head").kind == "head"


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b7"])
def test_builtin_backbones_describe_on_meta(name):
    """Needs the built-in families; B7 shows that describing a big variant allocates nothing."""
    import torchvision

    d = registry.describe(name)
    assert d.plugin == "vertebra" and d.distribution == "vertebra" and d.summary
    assert [s.stride for s in d.levels] == [2, 4, 8, 16, 32]
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)().features
    assert d.params == sum(p.numel() for p in reference.parameters())
