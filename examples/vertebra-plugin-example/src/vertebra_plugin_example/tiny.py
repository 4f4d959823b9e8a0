"""A tiny five-level convolutional backbone that honours the whole vertebra feature contract.

Each stage is a strided 3x3 conv followed by a plain 3x3 conv (BN + ReLU).  The stride table is a
data row per stage, as in vertebra's own families; ``StridePlan`` turns the late strides into
dilation when ``output_stride`` is 8 or 16, so dense heads (LR-ASPP, DeepLabV3) accept it.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn
from torchvision.ops import Conv2dNormActivation

from vertebra.backbones import Backbone, BackboneMeta, StridePlan
from vertebra.features import FeatureSpec

# (level name, width multiplier, paper stride): one row per stage.
STAGES = (
    ("C1", 1, 2),
    ("C2", 2, 2),
    ("C3", 4, 2),
    ("C4", 8, 2),
    ("C5", 16, 2),
)


def tiny_convnet(*, width: int = 8, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                 in_channels: int = 3) -> Backbone:
    """A tiny 5-level conv net (strides 2..32, width*1..16 channels) for examples and tests.

    Args:
        width: channels of the first stage; stage i has ``width * 2**i``.
        out_indices: which of the levels C1..C5 to return (all by default).
        output_stride: 8, 16 or 32; later stages are dilated instead of strided.
        in_channels: channels of the input images.
    """
    if not isinstance(width, int) or width < 1:
        from vertebra.errors import ConfigError

        raise ConfigError(f"width must be a positive integer, got {width!r}", path="width")
    plan = StridePlan(output_stride)
    layers, levels, channels = [], [], in_channels
    for index, (name, multiplier, stride) in enumerate(STAGES):
        stride, dilation = plan.step(stride)
        out = width * multiplier
        layers.append(nn.Sequential(
            Conv2dNormActivation(channels, out, 3, stride=stride, dilation=dilation),
            Conv2dNormActivation(out, out, 3, dilation=dilation),
        ))
        levels.append(FeatureSpec(name, out, plan.stride, index))
        channels = out
    return Backbone(nn.Sequential(*layers), levels, out_indices=out_indices, in_channels=in_channels,
                    meta=BackboneMeta(family="tiny_convnet", default_size=64, classifier_dropout=0.0))
