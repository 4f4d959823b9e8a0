"""Property: any batch, any H x W from 32 to 512 -> the right output shapes, for every head and family.

Runs on the ``meta`` device (shapes follow the same rules as on CPU; nothing is computed), so
hundreds of sizes cost seconds.  Detectors resize inputs themselves, so for them the property is
checked on the feature pyramid they run on.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from heads_helpers import HEADS, SMALLEST, is_detector
from vertebra import registry
from vertebra.heads.onestage import SSDLiteFeatures

CLASSES = 3


@functools.lru_cache(maxsize=None)
def _meta_model(head: str, backbone: str) -> torch.nn.Module:
    with torch.device("meta"):
        return registry.build(head, backbone=backbone, num_classes=CLASSES).eval()


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@pytest.mark.parametrize("head", HEADS)
@settings(max_examples=6, deadline=None)
@given(backbone=st.sampled_from(SMALLEST), batch=st.integers(1, 3), height=st.integers(32, 512),
       width=st.integers(32, 512))
def test_output_shapes_for_any_size(head, backbone, batch, height, width):
    model = _meta_model(head, backbone)
    if is_detector(model):
        with torch.device("meta"):
            out = model.backbone(torch.empty(batch, 3, height, width))
        if isinstance(model.backbone, SSDLiteFeatures):
            _check_ssdlite_maps(model.backbone, out, batch, height, width)
        else:
            _check_pyramid(model.backbone, out, batch, height, width)
        return
    divisor = getattr(model, "divisor", 1)  # smp decoders that upsample by exact factors
    smallest = getattr(model, "min_size", 1)  # PAN's pyramid attention pools the deepest map three times
    height, width = _round_up(max(height, smallest), divisor), _round_up(max(width, smallest), divisor)
    with torch.device("meta"):
        out = model(torch.empty(batch, 3, height, width))
    if isinstance(out, dict):
        assert set(out) <= {"out", "aux"} and "out" in out
        for value in out.values():
            assert value.shape == (batch, CLASSES, height, width)
    else:
        assert out.shape == (batch, CLASSES)


def _check_pyramid(pyramid, out, batch, height, width):
    """FPN levels at the backbone's strides, then the extra levels (pool, or p6 and p7), each halving."""
    assert list(out) == [*pyramid.level_names, *pyramid.extra_names]
    info = pyramid.body.feature_info
    for name in pyramid.level_names:
        stride = info[name].stride
        assert out[name].shape == (batch, pyramid.out_channels, math.ceil(height / stride), math.ceil(width / stride))
    previous = out[pyramid.level_names[-1]].shape[-2:]
    for name in pyramid.extra_names:  # max-pool (k1, s2) and the strided 3x3 convs both give ceil(n / 2)
        assert out[name].shape[-2:] == tuple(math.ceil(s / 2) for s in previous)
        previous = out[name].shape[-2:]


def _check_ssdlite_maps(features, out, batch, height, width):
    """Six maps: the stride-16 and stride-32 levels, then four extra blocks halving each time."""
    assert list(out) == [str(i) for i in range(6)]
    assert out["0"].shape[-2:] == (math.ceil(height / 16), math.ceil(width / 16))
    previous = (math.ceil(height / 32), math.ceil(width / 32))
    assert out["1"].shape[-2:] == previous
    for name in ("2", "3", "4", "5"):
        previous = tuple(math.ceil(s / 2) for s in previous)
        assert out[name].shape[-2:] == previous
    assert all(value.shape[0] == batch for value in out.values())
