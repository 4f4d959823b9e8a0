"""Choosing which feature levels a head reads, from the feature contract alone.

Heads never look at a backbone class: they pick levels from ``backbone.feature_info`` by stride or
by name.  The rules here are shared so every dense head reads levels the same way:

* the *low* (detail) level of LR-ASPP and DeepLabV3's auxiliary head is the **shallowest level at
  stride 8**.  With vertebra's default taps that is "C3", the last block of the stride-8 stage; with
  ``preset="torchvision"`` on MobileNetV3 it is "C3" too, the first (strided) block of that stage —
  exactly the layer torchvision's LR-ASPP and DeepLabV3 tap.  At ``output_stride=8`` the deeper
  levels are also stride 8, so "shallowest" keeps the detail level a detail level.
* the *high* level is always the deepest returned level.

A missing level is an :class:`~vertebra.errors.IncompatibleError` that names the head, the levels
the backbone has and the keyword that fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import IncompatibleError
from ..features import FeatureInfo, FeatureSpec

__all__: list[str] = []


def feature_info_of(backbone, head: str) -> FeatureInfo:
    """The backbone's ``feature_info``; a module without one cannot sit under any head."""
    info = getattr(backbone, "feature_info", None)
    if info is None or len(info) == 0:
        raise IncompatibleError(f"{head}: {type(backbone).__name__} has no feature_info; a backbone must "
                                "declare its levels (see vertebra.features.FeatureSpec)")
    return FeatureInfo(info)


def shallowest_with_stride(info: FeatureInfo, stride: int, head: str, role: str) -> FeatureSpec:
    """The first level whose effective stride is exactly ``stride``."""
    for spec in info:
        if spec.stride == stride:
            return spec
    raise IncompatibleError(
        f"{head} needs a stride-{stride} level for its {role} branch, but the backbone returns "
        f"{_describe(info)}; include that level in the backbone's out_indices (or leave out_indices=None)")


def by_names(info: FeatureInfo, names: Sequence[str], head: str) -> list[FeatureSpec]:
    """The levels called ``names`` (in the given order); unknown names are an IncompatibleError."""
    missing = [name for name in names if name not in info.names()]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise IncompatibleError(
            f"{head}: the backbone returns no level{plural} {', '.join(map(repr, missing))}; "
            f"it returns {_describe(info)}; pass levels= with some of {info.names()} or change the "
            "backbone's out_indices/preset")
    return [info[name] for name in names]


def deepest_per_stride(info: FeatureInfo) -> list[FeatureSpec]:
    """One level per distinct stride, the deepest of each, shallow to deep.

    With dilation (``output_stride=16``) "C4" and "C5" share stride 16; decoders that step by a
    factor of two per level want one map per scale, and the deeper one carries more context.
    """
    chosen: dict[int, FeatureSpec] = {}
    for spec in info:
        chosen[spec.stride] = spec
    return sorted(chosen.values(), key=lambda spec: spec.stride)


def _describe(info: FeatureInfo) -> str:
    return ", ".join(f"{spec.name} (stride {spec.stride})" for spec in info)
