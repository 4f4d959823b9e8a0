"""Choosing which feature levels a head reads, from the feature contract alone.

Heads never look at a backbone class: they pick levels from ``backbone.feature_info`` by stride or
by name.  The rules here are shared so every dense head reads levels the same way:

* the *low* (detail) level of LR-ASPP and DeepLabV3's auxiliary head is the **shallowest level at
  stride 8**.  With vertebra's default taps that is "C3", the last block of the stride-8 stage; with
  ``preset="torchvision"`` on MobileNetV3 it is "C3" too, the first (strided) block of that stage —
  exactly the layer torchvision's LR-ASPP and DeepLabV3 tap.  At ``output_stride=8`` the deeper
  levels are also stride 8, so "shallowest" keeps the detail level a detail level.
* the *high* level is always the deepest returned level.

These helpers only pick: that the levels exist is a head's declared
:class:`~vertebra.heads.Requirements`, checked once (``heads._base.requirements_problem``) before
a builder runs, so a missing level has one message however the head was reached.
"""

from __future__ import annotations

from ..features import FeatureInfo, FeatureSpec

__all__: list[str] = []


def feature_info_of(backbone) -> FeatureInfo:
    """The backbone's ``feature_info`` as a :class:`FeatureInfo` (a plugin may declare a plain tuple)."""
    return FeatureInfo(backbone.feature_info)


def input_channels(backbone) -> int:
    """Channels of the input image: the backbone's ``in_channels`` (optional in the contract), else 3."""
    return int(getattr(backbone, "in_channels", 3))


def shallowest_with_stride(info: FeatureInfo, stride: int) -> FeatureSpec:
    """The first level whose effective stride is exactly ``stride`` (required by ``Requirements.strides``)."""
    return next(spec for spec in info if spec.stride == stride)


def deepest_per_stride(info: FeatureInfo) -> list[FeatureSpec]:
    """One level per distinct stride, the deepest of each, shallow to deep.

    With dilation (``output_stride=16``) "C4" and "C5" share stride 16; decoders that step by a
    factor of two per level want one map per scale, and the deeper one carries more context.
    """
    chosen: dict[int, FeatureSpec] = {}
    for spec in info:
        chosen[spec.stride] = spec
    return sorted(chosen.values(), key=lambda spec: spec.stride)
