"""The feature contract (GUIDE.md §2), checked for every registered backbone.

Shape checks run on the ``meta`` device: the convolution shape rules (padding, stride, dilation) are
the same as on CPU, so every backbone at every output stride costs milliseconds.  Numerical runs
(finite values, backward) use the smallest variant of each family on real tensors.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vertebra import registry
from vertebra.backbones import Backbone
from vertebra.features import BackboneProtocol, FeatureInfo, FreezableBackbone

BACKBONES = registry.list_backbones()
SMALLEST = ["efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_small"]
NOMINAL = (2, 4, 8, 16, 32)


@functools.lru_cache(maxsize=None)
def _cached_meta_backbone(name: str, output_stride: int) -> Backbone:
    return _meta_backbone(name, output_stride=output_stride).eval()


def _meta_backbone(name: str, **kwargs) -> Backbone:
    with torch.device("meta"):
        return registry.build_backbone(name, **kwargs)


def _check_outputs(backbone, out, batch: int, height: int, width: int) -> None:
    assert list(out) == backbone.feature_info.names()
    for spec, tensor in zip(backbone.feature_info, out.values()):
        assert tuple(tensor.shape) == (batch, spec.channels, math.ceil(height / spec.stride),
                                       math.ceil(width / spec.stride)), spec


def test_every_family_is_registered():
    for name in ["efficientnet", *(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s",
                 "efficientnet_v2_m", "efficientnet_v2_l", "mobilenet_v3_large", "mobilenet_v3_small"]:
        assert name in BACKBONES


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_satisfies_the_protocol_heads_rely_on(name):
    backbone = _cached_meta_backbone(name, 32)
    assert isinstance(backbone, BackboneProtocol) and isinstance(backbone, FreezableBackbone)


def test_backbone_methods_take_the_protocol_arguments():
    """isinstance checks presence only; the methods a head calls must also accept what it passes."""
    import inspect

    for protocol in (BackboneProtocol, FreezableBackbone):
        for name in ("forward", "freeze"):
            if name in vars(protocol):
                wanted = inspect.signature(getattr(protocol, name)).parameters
                actual = inspect.signature(getattr(Backbone, name)).parameters
                assert list(actual)[:len(wanted)] == list(wanted), name
                assert all(actual[p].kind == wanted[p].kind for p in wanted), name
    assert not isinstance(torch.nn.Conv2d(3, 8, 3), BackboneProtocol)  # no feature_info: no contract


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("name", BACKBONES)
def test_levels_match_feature_info_at_odd_size(name, output_stride):
    backbone = _cached_meta_backbone(name, output_stride)
    assert isinstance(backbone.feature_info, FeatureInfo)
    assert backbone.feature_info.names() == ["C1", "C2", "C3", "C4", "C5"]
    assert backbone.feature_info.strides() == [min(s, output_stride) for s in NOMINAL]
    assert backbone.output_stride == output_stride
    with torch.device("meta"):
        out = backbone(torch.empty(2, 3, 97, 131))
    _check_outputs(backbone, out, 2, 97, 131)


@pytest.mark.parametrize("name", BACKBONES)
def test_out_indices_select_levels_and_stop_early(name):
    full = _cached_meta_backbone(name, 32)
    backbone = _meta_backbone(name, out_indices=[-1, 2])
    assert backbone.feature_info.names() == ["C3", "C5"]
    assert backbone.feature_info.channels() == [full.feature_info[2].channels, full.feature_info[4].channels]
    shallow = _meta_backbone(name, out_indices=[1])
    with torch.device("meta"):
        out = shallow(torch.empty(1, 3, 64, 64))
    _check_outputs(shallow, out, 1, 64, 64)
    # The deepest level is the full-width final conv a classifier pools.
    assert full.out_channels == full.feature_info[-1].channels == max(full.feature_info.channels())


@pytest.mark.parametrize("name", BACKBONES)
def test_describe_on_meta(name):
    description = registry.describe(name)
    backbone = _cached_meta_backbone(name, 32)
    assert description.levels == tuple(backbone.feature_info)
    assert description.params == sum(p.numel() for p in backbone.parameters())
    assert description.macs and description.macs > 0
    assert description.input_size == backbone.meta.default_size


@pytest.mark.parametrize("name", SMALLEST)
def test_real_forward_and_backward_at_odd_size(name):
    torch.manual_seed(0)
    backbone = registry.build_backbone(name, output_stride=8)
    out = backbone(torch.randn(2, 3, 41, 35))
    _check_outputs(backbone, out, 2, 41, 35)
    loss = sum(level.float().square().mean() for level in out.values())
    loss.backward()
    for pname, parameter in backbone.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), pname
    assert all(torch.isfinite(level).all() for level in out.values())


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(SMALLEST), output_stride=st.sampled_from([8, 16, 32]),
       batch=st.integers(1, 3), height=st.integers(32, 512), width=st.integers(32, 512))
def test_any_size_gives_ceil_sizes(name, output_stride, batch, height, width):
    backbone = _cached_meta_backbone(name, output_stride)
    with torch.device("meta"):
        out = backbone(torch.empty(batch, 3, height, width))
    _check_outputs(backbone, out, batch, height, width)
