"""The feature contract: the one piece of data that lets any head sit on any backbone.

A backbone's ``forward(x)`` returns an ordered ``dict[str, Tensor]``, shallow to deep, whose keys,
channel counts and strides are exactly its ``feature_info`` (a :class:`FeatureInfo`).  Heads read
only this, never a backbone class, so a third-party backbone works under every head for free.

:class:`BackboneProtocol` writes down everything a head reads off a backbone, and
:class:`FreezableBackbone` the two more members a head's ``trainable_layers`` option uses;
``vertebra.backbones.Backbone`` satisfies both.  This module imports no torch, so the registry
can describe the contract without loading it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["FeatureSpec", "FeatureInfo", "BackboneProtocol", "FreezableBackbone"]


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


@runtime_checkable
class BackboneProtocol(Protocol):
    """What every head reads off a backbone: the plugin author's checklist.

    A backbone is an ``nn.Module`` with these two members; nothing else is required for it to sit
    under every vertebra head (``registry.compatible(head)`` then checks the levels each head
    needs).  ``isinstance(module, BackboneProtocol)`` checks that both are present.

    Heads also read two optional attributes, with a default when absent:

    * ``meta``: the classifier head takes ``meta.classifier_dropout`` (default 0.2) and
      ``meta.classifier_hidden`` (a hidden linear layer, MobileNetV3-style; default none) from it.
    * ``in_channels``: the channels of the input image (default 3); the smp decoders count the
      image as their stride-1 entry.

    A vertebra ``Backbone`` also offers ``out_channels``, ``output_stride`` and
    ``set_grad_checkpointing``; no head relies on them, so they are not part of the contract.
    """

    #: Every level ``forward`` returns, shallow to deep: names, channels and *effective* strides
    #: (after dilation).  Read without running the model: the registry checks a head's
    #: requirements against it on the ``meta`` device, before any weights exist.
    feature_info: FeatureInfo

    def forward(self, x: Tensor) -> Mapping[str, Tensor]:
        """``x`` (N, C, H, W) -> an ordered mapping, shallow to deep, whose keys, channels and
        strides are exactly ``feature_info``; a level of stride ``s`` is ``ceil(H / s)`` high."""
        ...


@runtime_checkable
class FreezableBackbone(BackboneProtocol, Protocol):
    """A backbone whose stages can be frozen: what a head's ``trainable_layers`` needs on top.

    A backbone without these members works under every head; only ``trainable_layers`` (which
    must count stages) refuses it with a ConfigError that says to leave the option unset.
    """

    #: Every level the architecture offers (``feature_info`` is the subset ``out_indices`` chose).
    #: Stages are counted over these, so freezing does not depend on which levels are returned.
    all_levels: FeatureInfo

    def freeze(self, stages: int | None = None, bn: str = "eval", *,
               taps_start_stages: bool = False) -> Any:
        """Stop gradients for the stem and the first ``stages`` stages (all when ``None``).

        ``bn``: what the frozen part's BatchNorm does in ``train()``: ``"eval"`` (statistics
        fixed), ``"frozen"`` (FrozenBatchNorm2d) or ``"train"`` (keeps updating).
        ``taps_start_stages``: ``True`` when each level's tap is the *first* block of its stage
        (torchvision's MobileNetV3 taps), so a stage runs from its tap to the next one; ``False``
        when the tap is the *last* block (vertebra's default taps).
        """
        ...
