"""The feature contract: the one piece of data that lets any head sit on any backbone.

A backbone's ``forward(x)`` returns an ordered ``dict[str, Tensor]``, shallow to deep, whose keys,
channel counts and strides are exactly its ``feature_info`` (a :class:`FeatureInfo`).  Heads read
only this, never a backbone class, so a third-party backbone works under every head for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FeatureSpec", "FeatureInfo"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature level.

    ``stride`` is the *effective* stride after dilation: with ``output_stride=16`` the deepest level
    of a backbone reports 16, not 32.  ``index`` is the position of the producing layer inside the
    backbone (useful for freezing and for mapping checkpoints); heads should not rely on it.
    """

    name: str
    channels: int
    stride: int
    index: int = -1

    def spatial_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size of this level for an input of ``height × width``: ``ceil(H / stride)``."""
        return math.ceil(height / self.stride), math.ceil(width / self.stride)


class FeatureInfo(tuple):
    """An ordered tuple of :class:`FeatureSpec`, shallow to deep, with timm-style query helpers."""

    def __new__(cls, specs=()):
        specs = tuple(specs)
        for spec in specs:
            if not isinstance(spec, FeatureSpec):
                raise TypeError(f"FeatureInfo holds FeatureSpec values, got {type(spec).__name__}")
        return super().__new__(cls, specs)

    def names(self) -> list[str]:
        return [spec.name for spec in self]

    def channels(self) -> list[int]:
        return [spec.channels for spec in self]

    def strides(self) -> list[int]:
        return [spec.stride for spec in self]

    def reduction(self) -> list[int]:
        """timm's name for :meth:`strides`."""
        return self.strides()

    def __getitem__(self, key):
        """Index by position (``info[-1]``), slice, or level name (``info["C3"]``)."""
        if isinstance(key, str):
            for spec in self:
                if spec.name == key:
                    return spec
            raise KeyError(f"no feature level {key!r}; levels: {', '.join(self.names())}")
        result = super().__getitem__(key)
        return FeatureInfo(result) if isinstance(key, slice) else result

    def __repr__(self) -> str:
        return "FeatureInfo(" + ", ".join(f"{s.name}: {s.channels}ch/{s.stride}" for s in self) + ")"
