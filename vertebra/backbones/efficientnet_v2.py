"""EfficientNetV2 S/M/L (Tan & Le, "EfficientNetV2: Smaller Models and Faster Training", ICML 2021).

The S table is Table 4 of the paper; M and L are the paper's scaled-up searches as released in the
official code and torchvision.  Early stages use Fused-MBConv (one full 3x3 conv instead of expand +
depthwise: faster on accelerators at high resolution), later stages MBConv with SE; the head conv is
1280 channels for every size.  The paper trains with progressive resizing up to ``default_size`` and
evaluates at ``eval_size`` (S 300/384, M 384/480, L 384/480); torchvision's figures are at the eval size.

Levels C1..C5 (strides 2..32) are the last stage of each stride; C5 is the 1280-channel head conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

from torch import nn

from ..validation import check_choice, check_range
from ._base import Backbone, BackboneMeta
from ._blocks import init_weights
from ._mbconv import Stage, build_features

__all__ = ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"]

PRESETS = ("default",)
HEAD_CHANNELS = 1280
# torchvision's V2 BatchNorm: TF epsilon, PyTorch's default momentum.
_NORM = partial(nn.BatchNorm2d, eps=1e-3)

S_STAGES = (
    #     block     expand kernel stride  in   out  layers
    Stage("fused",  1,     3,     1,      24,  24,  2),
    Stage("fused",  4,     3,     2,      24,  48,  4),
    Stage("fused",  4,     3,     2,      48,  64,  4),
    Stage("mbconv", 4,     3,     2,      64,  128, 6),
    Stage("mbconv", 6,     3,     1,      128, 160, 9),
    Stage("mbconv", 6,     3,     2,      160, 256, 15),
)
M_STAGES = (
    Stage("fused",  1,     3,     1,      24,  24,  3),
    Stage("fused",  4,     3,     2,      24,  48,  5),
    Stage("fused",  4,     3,     2,      48,  80,  5),
    Stage("mbconv", 4,     3,     2,      80,  160, 7),
    Stage("mbconv", 6,     3,     1,      160, 176, 14),
    Stage("mbconv", 6,     3,     2,      176, 304, 18),
    Stage("mbconv", 6,     3,     1,      304, 512, 5),
)
L_STAGES = (
    Stage("fused",  1,     3,     1,      32,  32,  4),
    Stage("fused",  4,     3,     2,      32,  64,  7),
    Stage("fused",  4,     3,     2,      64,  96,  7),
    Stage("mbconv", 4,     3,     2,      96,  192, 10),
    Stage("mbconv", 6,     3,     1,      192, 224, 19),
    Stage("mbconv", 6,     3,     2,      224, 384, 25),
    Stage("mbconv", 6,     3,     1,      384, 640, 7),
)


@dataclass(frozen=True)
class Variant:
    """Table, sizes and dropout of one size, with the paper's and torchvision's published figures."""

    stages: tuple[Stage, ...]
    train_size: int
    eval_size: int
    dropout: float
    params_m: float      # paper, Table 7 (ImageNet-1k)
    macs_g: float        # paper, Table 7 "FLOPs" (multiply-adds, billions)
    top1: float          # paper, Table 7
    tv_params: int       # torchvision weights meta
    tv_gmacs: float      # torchvision weights meta "_ops" (at eval_size)
    tv_top1: float


VARIANTS = {
    #                                      train eval  drop params MACs  top1  tv_params    tv_gmacs tv_top1
    "efficientnet_v2_s": Variant(S_STAGES, 300, 384, 0.2, 22, 8.8, 83.9, 21_458_488, 8.366, 84.228),
    "efficientnet_v2_m": Variant(M_STAGES, 384, 480, 0.3, 54, 24, 85.1, 54_139_356, 24.582, 85.112),
    "efficientnet_v2_l": Variant(L_STAGES, 384, 480, 0.4, 120, 53, 85.7, 118_515_272, 56.08, 85.808),
}


def _efficientnet_v2(name: str, *, out_indices: Sequence[int] | None, output_stride: int, preset: str,
                     drop_path_rate: float) -> Backbone:
    check_choice(preset, PRESETS, path="preset",
                 hint="torchvision has no dense EfficientNetV2 models, so there is no 'torchvision' preset")
    check_range(drop_path_rate, path="drop_path_rate", low=0.0, high=1.0)
    v = VARIANTS[name]
    builder = build_features(v.stages, head_channels=HEAD_CHANNELS, norm_layer=_NORM,
                             output_stride=output_stride, drop_path_rate=drop_path_rate)
    features = builder.features()
    init_weights(features)
    paper = {"params_m": v.params_m, "macs_g": v.macs_g, "top1": v.top1, "torchvision_params": v.tv_params,
             "torchvision_gmacs": v.tv_gmacs, "torchvision_top1": v.tv_top1}
    meta = BackboneMeta(family="efficientnet_v2", default_size=v.train_size, eval_size=v.eval_size,
                        classifier_dropout=v.dropout, torchvision_name=name, paper=paper)
    return Backbone(features, builder.last_of_each_stride(), out_indices=out_indices, meta=meta)


def efficientnet_v2_s(*, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                      preset: str = "default", drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNetV2-S (21.5M parameters, 8.4 GMACs at 384 px with its classifier); C1..C5 = 24/48/64/160/1280 ch.

    Args:
        out_indices: levels to return (default all five).
        output_stride: 8, 16 or 32; below 32 the last stages keep stride 1 and dilate their spatial
            convs (depthwise in MBConv, the full 3x3 conv in Fused-MBConv).
        preset: only ``"default"`` (torchvision has no dense EfficientNetV2 to mimic).
        drop_path_rate: stochastic depth of the last block, linear in block index (residual blocks only).
    """
    return _efficientnet_v2("efficientnet_v2_s", out_indices=out_indices, output_stride=output_stride,
                            preset=preset, drop_path_rate=drop_path_rate)


def efficientnet_v2_m(*, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                      preset: str = "default", drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNetV2-M (54M parameters, 24.6 GMACs at 480 px).  Arguments as :func:`efficientnet_v2_s`."""
    return _efficientnet_v2("efficientnet_v2_m", out_indices=out_indices, output_stride=output_stride,
                            preset=preset, drop_path_rate=drop_path_rate)


def efficientnet_v2_l(*, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                      preset: str = "default", drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNetV2-L (119M parameters, 56 GMACs at 480 px).  Arguments as :func:`efficientnet_v2_s`."""
    return _efficientnet_v2("efficientnet_v2_l", out_indices=out_indices, output_stride=output_stride,
                            preset=preset, drop_path_rate=drop_path_rate)
