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
        pyramid = model.backbone
        with torch.device("meta"):
            out = pyramid(torch.empty(batch, 3, height, width))
        assert list(out) == [*pyramid.level_names, "pool"]
        info = pyramid.body.feature_info
        for name in pyramid.level_names:
            stride = info[name].stride
            assert out[name].shape == (batch, pyramid.out_channels, math.ceil(height / stride),
                                       math.ceil(width / stride))
        deepest = out[pyramid.level_names[-1]].shape[-2:]
        assert out["pool"].shape[-2:] == tuple(math.ceil(s / 2) for s in deepest)
        return
    divisor = getattr(model, "divisor", 1)  # smp decoders that upsample by exact factors
    height, width = _round_up(height, divisor), _round_up(width, divisor)
    with torch.device("meta"):
        out = model(torch.empty(batch, 3, height, width))
    if isinstance(out, dict):
        assert set(out) <= {"out", "aux"} and "out" in out
        for value in out.values():
            assert value.shape == (batch, CLASSES, height, width)
    else:
        assert out.shape == (batch, CLASSES)
