"""The EfficientNet body shared by V1 and V2: a stem, one stage per table row, a 1x1 head conv.

Each family file states its table as :class:`Stage` rows (Table 1 of the EfficientNet paper, Table 4
of the EfficientNetV2 paper) and calls :func:`build_features`.  The layout is torchvision's:
``features[0]`` the stem, ``features[1..n]`` one ``nn.Sequential`` of blocks per row, ``features[-1]``
the head conv — so torchvision checkpoints load unchanged and each stage is one checkpointing unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

from torch import nn
from torchvision.ops import Conv2dNormActivation

from ._base import FeaturesBuilder, make_divisible
from ._blocks import FusedMBConv, MBConv, NormLayer

__all__ = ["Stage", "build_features"]

_BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}


@dataclass(frozen=True)
class Stage:
    """One row of the paper's table: ``layers`` blocks of ``block`` type, the first one strided."""

    block: Literal["mbconv", "fused"]
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    layers: int


def build_features(stages: Sequence[Stage], *, head_channels: int | None, norm_layer: NormLayer,
                   output_stride: int, drop_path_rate: float, width_mult: float = 1.0,
                   depth_mult: float = 1.0) -> FeaturesBuilder:
    """Stem, stages and head conv, with compound scaling and the stride plan applied.

    Widths are ``make_divisible(c * width_mult, 8)`` (never more than 10% below the exact value);
    repeats are ``ceil(layers * depth_mult)``.  Block ``i`` of ``n`` gets stochastic-depth probability
    ``drop_path_rate * i / n`` (torchvision's rule; only residual blocks use it).  ``head_channels``
    ``None`` means four times the last stage's width (EfficientNet's 1280 at B0).
    """
    def width(channels: int) -> int:
        return make_divisible(channels * width_mult, 8)

    repeats = [int(math.ceil(stage.layers * depth_mult)) for stage in stages]
    total = sum(repeats)
    builder = FeaturesBuilder(output_stride)
    stride, _ = builder.step(2)
    channels = width(stages[0].in_channels)
    builder.append(Conv2dNormActivation(3, channels, kernel_size=3, stride=stride, norm_layer=norm_layer,
                                        activation_layer=nn.SiLU), channels)
    index = 0
    for stage, count in zip(stages, repeats):
        out = width(stage.out_channels)
        blocks = []
        for j in range(count):
            paper_stride = stage.stride if j == 0 else 1
            stride, dilation = builder.step(paper_stride)
            blocks.append(_BLOCKS[stage.block](
                channels, out, expand_ratio=stage.expand_ratio, kernel=stage.kernel, stride=stride,
                dilation=dilation, norm_layer=norm_layer, residual=paper_stride == 1 and channels == out,
                drop_path=drop_path_rate * index / total))
            channels = out
            index += 1
        builder.append(nn.Sequential(*blocks), out)
    head = head_channels if head_channels is not None else 4 * channels
    builder.append(Conv2dNormActivation(channels, head, kernel_size=1, norm_layer=norm_layer,
                                        activation_layer=nn.SiLU), head)
    return builder

