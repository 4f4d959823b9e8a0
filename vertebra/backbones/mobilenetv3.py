"""MobileNetV3 Large and Small (Howard et al., "Searching for MobileNetV3", ICCV 2019).

The two tables below are Tables 1 and 2 of the paper, one row per bottleneck.  ``features`` has
torchvision's layout — ``features[0]`` the stem, one entry per bottleneck, the last entry the 1x1 conv
to 960 (Large) / 576 (Small) channels — so a torchvision ``mobilenet_v3_*`` checkpoint's ``features.*``
keys load unchanged, and ``output_stride=16`` is torchvision's ``dilated=True`` exactly.

Levels (``preset``):

* ``"default"``: the deepest entry of each stride, ``C1``..``C5`` at strides 2..32; ``C5`` is the final
  1x1 conv the classifier pools.
* ``"torchvision"``: torchvision's detection/segmentation tap points — the stem (``C1``), the first,
  strided bottleneck of each later stage (``C2``, ``C3``, ``C4``, ``C5_block``) and the final conv
  (``C5``).  torchvision's Faster R-CNN uses ``C5_block`` + ``C5``; LR-ASPP and DeepLabV3 use ``C3``
  + ``C5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

from torch import nn
from torchvision.ops import Conv2dNormActivation

from ..errors import ConfigError
from ..features import FeatureSpec
from ..validation import check_choice, check_range
from ._base import Backbone, BackboneMeta, FeaturesBuilder, make_divisible
from ._blocks import InvertedResidual, init_weights

__all__ = ["mobilenet_v3_large", "mobilenet_v3_small"]

PRESETS = ("default", "torchvision")
# TF-style BatchNorm, as torchvision (and the paper's TF code) use for MobileNetV3.
_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
_ACTIVATIONS = {"RE": nn.ReLU, "HS": nn.Hardswish}


@dataclass(frozen=True)
class Bneck:
    """One row of the paper's table: ``bneck, k x k`` | exp size | #out | SE | NL | s."""

    kernel: int
    expanded: int
    out: int
    se: bool
    nl: str       # "RE" (ReLU) or "HS" (hard-swish)
    stride: int


def _large(tail: int) -> tuple[int, tuple[Bneck, ...], int]:
    """Table 1.  ``tail`` = 2 halves the last stage (``reduced_tail``).  Returns (stem, rows, hidden)."""
    rows = (
        #     k  exp           out           SE     NL    s
        Bneck(3, 16,           16,           False, "RE", 1),
        Bneck(3, 64,           24,           False, "RE", 2),
        Bneck(3, 72,           24,           False, "RE", 1),
        Bneck(5, 72,           40,           True,  "RE", 2),
        Bneck(5, 120,          40,           True,  "RE", 1),
        Bneck(5, 120,          40,           True,  "RE", 1),
        Bneck(3, 240,          80,           False, "HS", 2),
        Bneck(3, 200,          80,           False, "HS", 1),
        Bneck(3, 184,          80,           False, "HS", 1),
        Bneck(3, 184,          80,           False, "HS", 1),
        Bneck(3, 480,          112,          True,  "HS", 1),
        Bneck(3, 672,          112,          True,  "HS", 1),
        Bneck(5, 672,          160 // tail,  True,  "HS", 2),
        Bneck(5, 960 // tail,  160 // tail,  True,  "HS", 1),
        Bneck(5, 960 // tail,  160 // tail,  True,  "HS", 1),
    )
    return 16, rows, 1280 // tail


def _small(tail: int) -> tuple[int, tuple[Bneck, ...], int]:
    """Table 2.  ``tail`` = 2 halves the last stage (``reduced_tail``).  Returns (stem, rows, hidden)."""
    rows = (
        #     k  exp           out          SE     NL    s
        Bneck(3, 16,           16,          True,  "RE", 2),
        Bneck(3, 72,           24,          False, "RE", 2),
        Bneck(3, 88,           24,          False, "RE", 1),
        Bneck(5, 96,           40,          True,  "HS", 2),
        Bneck(5, 240,          40,          True,  "HS", 1),
        Bneck(5, 240,          40,          True,  "HS", 1),
        Bneck(5, 120,          48,          True,  "HS", 1),
        Bneck(5, 144,          48,          True,  "HS", 1),
        Bneck(5, 288,          96 // tail,  True,  "HS", 2),
        Bneck(5, 576 // tail,  96 // tail,  True,  "HS", 1),
        Bneck(5, 576 // tail,  96 // tail,  True,  "HS", 1),
    )
    return 16, rows, 1024 // tail


# The paper's figures (width 1.0, full tail) and torchvision's ImageNet weights, for describe().
_PAPER = {
    "mobilenet_v3_large": {"params_m": 5.4, "macs_g": 0.219, "top1": 75.2,
                           "torchvision_params": 5_483_032, "torchvision_gmacs": 0.217,
                           "torchvision_top1": 75.274},
    "mobilenet_v3_small": {"params_m": 2.5, "macs_g": 0.056, "top1": 67.4,
                           "torchvision_params": 2_542_856, "torchvision_gmacs": 0.057,
                           "torchvision_top1": 67.668},
}


def _mobilenet_v3(arch: str, table, *, out_indices: Sequence[int] | None, output_stride: int, preset: str,
                  width_mult: float, reduced_tail: bool, drop_path_rate: float) -> Backbone:
    check_choice(preset, PRESETS, path="preset")
    check_range(width_mult, path="width_mult", low=0.0, low_inclusive=False)
    check_range(drop_path_rate, path="drop_path_rate", low=0.0, high=1.0)
    if not isinstance(reduced_tail, bool):
        raise ConfigError(f"must be True or False, got {reduced_tail!r}", path="reduced_tail")

    def width(channels: int) -> int:
        return make_divisible(channels * width_mult, 8)

    stem, rows, hidden = table(2 if reduced_tail else 1)
    builder = FeaturesBuilder(output_stride)
    stride, _ = builder.step(2)
    channels = width(stem)
    builder.append(Conv2dNormActivation(3, channels, kernel_size=3, stride=stride, norm_layer=_NORM,
                                        activation_layer=nn.Hardswish), channels)
    for i, row in enumerate(rows):
        out = width(row.out)
        stride, dilation = builder.step(row.stride)
        builder.append(InvertedResidual(
            channels, width(row.expanded), out, kernel=row.kernel, stride=stride, dilation=dilation,
            use_se=row.se, activation=_ACTIVATIONS[row.nl], norm_layer=_NORM,
            residual=row.stride == 1 and channels == out, drop_path=drop_path_rate * i / len(rows)), out)
        channels = out
    builder.append(Conv2dNormActivation(channels, 6 * channels, kernel_size=1, norm_layer=_NORM,
                                        activation_layer=nn.Hardswish), 6 * channels)

    levels = builder.last_of_each_stride() if preset == "default" else _torchvision_levels(builder)
    paper = _PAPER[arch] if width_mult == 1.0 and not reduced_tail else {}
    meta = BackboneMeta(family="mobilenet_v3", default_size=224, classifier_dropout=0.2,
                        classifier_hidden=width(hidden), torchvision_name=arch, paper=dict(paper))
    features = builder.features()
    init_weights(features)
    return Backbone(features, levels, out_indices=out_indices, meta=meta)


def _torchvision_levels(builder: FeaturesBuilder) -> list[FeatureSpec]:
    """torchvision's taps: the stem, the first (strided) entry of each later stride, the final conv."""
    firsts: dict[int, int] = {}
    for record in builder.records:
        firsts.setdefault(record.nominal_stride, record.index)
    taps = [(f"C{s.bit_length() - 1}" if s < 32 else "C5_block", i) for s, i in sorted(firsts.items())]
    taps.append(("C5", builder.records[-1].index))
    return [FeatureSpec(name, builder.records[i].channels, builder.records[i].stride, i) for name, i in taps]


def mobilenet_v3_large(*, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                       preset: str = "default", width_mult: float = 1.0, reduced_tail: bool = False,
                       drop_path_rate: float = 0.0) -> Backbone:
    """MobileNetV3-Large (5.5M parameters and 0.22 GMACs at 224 px with its classifier); C1..C5 = 16/24/40/112/960 ch.

    Args:
        out_indices: levels to return (default all); see the module docstring for ``preset``.
        output_stride: 8, 16 or 32; 16 dilates the last stage (torchvision's ``dilated=True``).
        width_mult: channel multiplier, rounded to multiples of 8 (0.75 and 1.0 are the paper's).
        reduced_tail: halve the last stage's channels (the paper's detection/segmentation variant).
        drop_path_rate: stochastic depth of the last residual block (linear in block index; 0 = off,
            torchvision trains without it).
    """
    return _mobilenet_v3("mobilenet_v3_large", _large, out_indices=out_indices, output_stride=output_stride,
                         preset=preset, width_mult=width_mult, reduced_tail=reduced_tail,
                         drop_path_rate=drop_path_rate)


def mobilenet_v3_small(*, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                       preset: str = "default", width_mult: float = 1.0, reduced_tail: bool = False,
                       drop_path_rate: float = 0.0) -> Backbone:
    """MobileNetV3-Small (2.5M parameters and 0.06 GMACs at 224 px with its classifier); C1..C5 = 16/16/24/48/576 ch.

    Arguments as :func:`mobilenet_v3_large`.
    """
    return _mobilenet_v3("mobilenet_v3_small", _small, out_indices=out_indices, output_stride=output_stride,
                         preset=preset, width_mult=width_mult, reduced_tail=reduced_tail,
                         drop_path_rate=drop_path_rate)
