"""EfficientNet B0-B7 and compound scaling (Tan & Le, "EfficientNet: Rethinking Model Scaling", ICML 2019).

``STAGES`` is Table 1 of the paper (the B0 network found by architecture search); every variant is
B0 with its widths multiplied (rounded to multiples of 8, never losing more than 10%) and its repeats
multiplied (rounded up).  ``VARIANTS`` holds the per-variant width / depth / resolution / dropout of
the paper and torchvision, B0 1.0/1.0/224/0.2 ... B7 2.0/3.1/600/0.5, plus the published figures.

Compound scaling (§3.3): for a coefficient ``phi``, depth ``alpha**phi``, width ``beta**phi`` and
resolution ``gamma**phi`` with ``alpha=1.2, beta=1.1, gamma=1.15`` chosen so that
``alpha * beta**2 * gamma**2 ~= 2``: FLOPs grow by about ``2**phi``.  :func:`efficientnet` builds
any ``phi`` (or explicit multipliers); B1-B7 themselves use the hand-tuned values of the table.

Levels C1..C5 (strides 2..32) are the last stage of each stride; C5 is the 1x1 head conv to
``1280 * width`` channels, the map the classifier pools.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Sequence

from torch import nn

from ..errors import ConfigError
from ..validation import check_choice, check_range
from ._base import Backbone, BackboneMeta
from ._blocks import init_weights
from ._mbconv import Stage, build_features

__all__ = [
    "efficientnet",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
]

PRESETS = ("default",)
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of compound scaling

STAGES = (
    #     block     expand kernel stride  in   out  layers
    Stage("mbconv", 1,     3,     1,      32,  16,  1),
    Stage("mbconv", 6,     3,     2,      16,  24,  2),
    Stage("mbconv", 6,     5,     2,      24,  40,  2),
    Stage("mbconv", 6,     3,     2,      40,  80,  3),
    Stage("mbconv", 6,     5,     1,      80,  112, 3),
    Stage("mbconv", 6,     5,     2,      112, 192, 4),
    Stage("mbconv", 6,     3,     1,      192, 320, 1),
)


@dataclass(frozen=True)
class Variant:
    """Scaling of one variant, with the paper's and torchvision's published figures."""

    width: float
    depth: float
    resolution: int
    dropout: float
    tf_batchnorm: bool     # torchvision's B5-B7 (ported TF weights) use eps=1e-3, momentum=0.01
    params_m: float        # paper, Table 2
    macs_g: float          # paper, Table 2 "FLOPs" (multiply-adds, billions)
    top1: float            # paper, Table 2
    tv_params: int         # torchvision weights meta
    tv_gmacs: float        # torchvision weights meta "_ops"
    tv_top1: float         # torchvision IMAGENET1K_V1
    tv_crop: int           # torchvision eval crop size


VARIANTS = {
    #                 width depth res  drop  TF-BN  params MACs  top1  tv_params   tv_gmacs tv_top1 crop
    "efficientnet_b0": Variant(1.0, 1.0, 224, 0.2, False, 5.3, 0.39, 77.1, 5_288_548, 0.386, 77.692, 224),
    "efficientnet_b1": Variant(1.0, 1.1, 240, 0.2, False, 7.8, 0.70, 79.1, 7_794_184, 0.687, 78.642, 240),
    "efficientnet_b2": Variant(1.1, 1.2, 260, 0.3, False, 9.2, 1.0, 80.1, 9_109_994, 1.088, 80.608, 288),
    "efficientnet_b3": Variant(1.2, 1.4, 300, 0.3, False, 12, 1.8, 81.6, 12_233_232, 1.827, 82.008, 300),
    "efficientnet_b4": Variant(1.4, 1.8, 380, 0.4, False, 19, 4.2, 82.9, 19_341_616, 4.394, 83.384, 380),
    "efficientnet_b5": Variant(1.6, 2.2, 456, 0.4, True, 30, 9.9, 83.6, 30_389_784, 10.266, 83.444, 456),
    "efficientnet_b6": Variant(1.8, 2.6, 528, 0.5, True, 43, 19, 84.0, 43_040_704, 19.068, 84.008, 528),
    "efficientnet_b7": Variant(2.0, 3.1, 600, 0.5, True, 66, 37, 84.3, 66_347_960, 37.746, 84.122, 600),
}


def _efficientnet(*, width: float, depth: float, out_indices: Sequence[int] | None, output_stride: int,
                  preset: str, drop_path_rate: float, tf_batchnorm: bool, meta: BackboneMeta) -> Backbone:
    check_choice(preset, PRESETS, path="preset",
                 hint="torchvision has no dense EfficientNet models, so there is no 'torchvision' preset")
    check_range(drop_path_rate, path="drop_path_rate", low=0.0, high=1.0)
    norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01) if tf_batchnorm else nn.BatchNorm2d
    builder = build_features(STAGES, head_channels=None, norm_layer=norm, output_stride=output_stride,
                             drop_path_rate=drop_path_rate, width_mult=width, depth_mult=depth)
    features = builder.features()
    init_weights(features)
    return Backbone(features, builder.last_of_each_stride(), out_indices=out_indices, meta=meta)


def _variant(name: str, *, out_indices: Sequence[int] | None, output_stride: int, preset: str,
             drop_path_rate: float) -> Backbone:
    v = VARIANTS[name]
    paper = {"params_m": v.params_m, "macs_g": v.macs_g, "top1": v.top1, "torchvision_params": v.tv_params,
             "torchvision_gmacs": v.tv_gmacs, "torchvision_top1": v.tv_top1, "torchvision_crop": v.tv_crop}
    meta = BackboneMeta(family="efficientnet", default_size=v.resolution, classifier_dropout=v.dropout,
                        torchvision_name=name, paper=paper)
    return _efficientnet(width=v.width, depth=v.depth, out_indices=out_indices, output_stride=output_stride,
                         preset=preset, drop_path_rate=drop_path_rate, tf_batchnorm=v.tf_batchnorm, meta=meta)


def efficientnet(phi: float | None = None, *, width_mult: float | None = None, depth_mult: float | None = None,
                 resolution: int | None = None, out_indices: Sequence[int] | None = None,
                 output_stride: int = 32, preset: str = "default", drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet at any compound-scaling coefficient ``phi``, or at explicit multipliers.

    ``phi`` scales depth by ``1.2**phi``, width by ``1.1**phi`` and the default resolution to
    ``224 * 1.15**phi`` (rounded to a multiple of 8); FLOPs grow by about ``2**phi`` (``phi=1``
    doubles B0's 0.39 G multiply-adds, ``phi=2.5`` is ~5.7x).  Alternatively pass ``width_mult`` /
    ``depth_mult`` (default 1.0) and ``resolution`` (default 224) directly; not both ways at once.
    ``phi=0`` (the default) is exactly B0.  The classifier dropout grows with ``phi`` as in B0-B7:
    ``0.2 + 0.1 * floor(phi / 2)``, at most 0.5.  Other arguments as :func:`efficientnet_b0`.
    """
    explicit = {"width_mult": width_mult, "depth_mult": depth_mult, "resolution": resolution}
    given = [key for key, value in explicit.items() if value is not None]
    if phi is not None and given:
        raise ConfigError(f"pass either phi or {'/'.join(given)}, not both: phi sets width, depth and "
                          f"resolution together", path="phi")
    if given:
        width = check_range(1.0 if width_mult is None else width_mult, path="width_mult", low=0.0,
                            low_inclusive=False)
        depth = check_range(1.0 if depth_mult is None else depth_mult, path="depth_mult", low=0.0,
                            low_inclusive=False)
        size = 224 if resolution is None else resolution
        if isinstance(size, bool) or not isinstance(size, int) or size < 32:
            raise ConfigError(f"must be an integer of at least 32, got {resolution!r}", path="resolution")
        dropout, exact_b0 = 0.2, width == depth == 1.0
    else:
        phi = check_range(0.0 if phi is None else phi, path="phi", low=0.0)
        width, depth = BETA ** phi, ALPHA ** phi
        size = int(round(224 * GAMMA ** phi / 8)) * 8
        dropout, exact_b0 = min(0.5, 0.2 + 0.1 * math.floor(phi / 2)), phi == 0
    meta = BackboneMeta(family="efficientnet", default_size=size, classifier_dropout=dropout,
                        torchvision_name="efficientnet_b0" if exact_b0 else None,
                        paper={"phi": phi, "width_mult": width, "depth_mult": depth})
    return _efficientnet(width=width, depth=depth, out_indices=out_indices, output_stride=output_stride,
                         preset=preset, drop_path_rate=drop_path_rate, tf_batchnorm=False, meta=meta)


def efficientnet_b0(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B0 (5.3M parameters, 0.39 GMACs at 224 px with its classifier); C1..C5 = 16/24/40/112/1280 ch.

    Args:
        out_indices: levels to return (default all five).
        output_stride: 8, 16 or 32; below 32 the last stages keep stride 1 and dilate their depthwise convs.
        preset: only ``"default"`` (torchvision has no dense EfficientNet to mimic).
        drop_path_rate: stochastic depth of the last block; block ``i`` of ``n`` drops with
            ``rate * i / n`` (residual blocks only), torchvision's default 0.2.
    """
    return _variant("efficientnet_b0", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b1(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B1 (width 1.0, depth 1.1, 240 px; 7.8M parameters).  Arguments as :func:`efficientnet_b0`."""
    return _variant("efficientnet_b1", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b2(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B2 (width 1.1, depth 1.2, 260 px; 9.1M parameters).  Arguments as :func:`efficientnet_b0`."""
    return _variant("efficientnet_b2", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b3(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B3 (width 1.2, depth 1.4, 300 px; 12M parameters).  Arguments as :func:`efficientnet_b0`."""
    return _variant("efficientnet_b3", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b4(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B4 (width 1.4, depth 1.8, 380 px; 19M parameters).  Arguments as :func:`efficientnet_b0`."""
    return _variant("efficientnet_b4", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b5(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B5 (width 1.6, depth 2.2, 456 px; 30M parameters; TF BatchNorm eps 1e-3 as torchvision).

    Arguments as :func:`efficientnet_b0`.
    """
    return _variant("efficientnet_b5", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b6(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B6 (width 1.8, depth 2.6, 528 px; 43M parameters; TF BatchNorm eps 1e-3 as torchvision).

    Arguments as :func:`efficientnet_b0`.
    """
    return _variant("efficientnet_b6", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)


def efficientnet_b7(*, out_indices: Sequence[int] | None = None, output_stride: int = 32, preset: str = "default",
                    drop_path_rate: float = 0.2) -> Backbone:
    """EfficientNet-B7 (width 2.0, depth 3.1, 600 px; 66M parameters; TF BatchNorm eps 1e-3 as torchvision).

    Arguments as :func:`efficientnet_b0`.
    """
    return _variant("efficientnet_b7", out_indices=out_indices, output_stride=output_stride, preset=preset,
                    drop_path_rate=drop_path_rate)
