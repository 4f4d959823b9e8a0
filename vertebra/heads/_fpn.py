"""A feature pyramid over any vertebra backbone, built from its ``feature_info``.

torchvision's ``BackboneWithFPN`` needs a module whose *named children* are the layers to tap
(``IntermediateLayerGetter``) and in-channels typed by hand.  A vertebra Backbone already returns
its levels by name and declares their channels, so the wrapper here only selects levels and feeds
torchvision's own :class:`~torchvision.ops.FeaturePyramidNetwork`.  It keeps torchvision's
attribute names (``body``, ``fpn``, ``out_channels``) so detection checkpoints map with one prefix
rule (``backbone.body.N`` -> ``backbone.body.features.N``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import ConfigError
from ..features import FeatureSpec

__all__: list[str] = []


class BackboneWithFPN(nn.Module):
    """``body`` (the backbone) -> chosen levels -> ``fpn`` -> ``{level: map, ..., "pool": map}``.

    Every output has ``out_channels`` channels; ``"pool"`` is torchvision's LastLevelMaxPool
    (stride 2 on the deepest level), used by the RPN only.
    """

    def __init__(self, body: nn.Module, levels: Sequence[FeatureSpec], out_channels: int = 256):
        super().__init__()
        self.body = body
        self.level_names = [spec.name for spec in levels]
        self.fpn = FeaturePyramidNetwork([spec.channels for spec in levels], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features = self.body(x)
        return self.fpn(OrderedDict((name, features[name]) for name in self.level_names))


def freeze_backbone(backbone: nn.Module, trainable_layers: int, *, taps_start_stages: bool) -> None:
    """Stop gradients for all but the ``trainable_layers`` deepest stages of ``backbone``.

    Counts stages over *all* levels the architecture offers (``backbone.all_levels``), like
    torchvision's ``trainable_backbone_layers`` (MobileNetV3: 0..6).  Where a stage begins depends
    on the tap convention:

    * ``taps_start_stages=True`` (torchvision's MobileNetV3 taps, the first block of a stage): a
      stage starts at its tap, so layers before the tap of the k-th deepest level freeze —
      torchvision's ``_mobilenet_extractor`` rule exactly.
    * otherwise (vertebra's default taps, the last block of a stride group): a stage ends at its
      tap, so everything up to and including the tap of the (k+1)-th deepest level freezes —
      ``Backbone.freeze(stages=n - k)``.

    BatchNorm layers in the frozen part keep updating running statistics in ``train()`` unless the
    head was built with ``frozen_bn=True`` (torchvision's recipe for pretrained backbones).
    """
    features, levels = getattr(backbone, "features", None), getattr(backbone, "all_levels", None)
    if not isinstance(features, nn.Sequential) or not levels:
        raise ConfigError("needs a vertebra Backbone (a 'features' sequence and "
                          f"'all_levels'); {type(backbone).__name__} has neither; leave trainable_layers=None",
                          path="trainable_layers")
    count = len(levels)
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) \
            or not 0 <= trainable_layers <= count:
        raise ConfigError(f"must be an integer from 0 (freeze the whole backbone) to {count} "
                          f"(train all of it), or None; got {trainable_layers!r}", path="trainable_layers")
    if trainable_layers == count:
        return
    if trainable_layers == 0:
        stop = len(features)
    elif taps_start_stages:
        stop = levels[count - trainable_layers].index
    else:
        stop = levels[count - trainable_layers - 1].index + 1
    for layer in list(features)[:stop]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)


def set_batchnorm(module: nn.Module, *, eps: float, momentum: float) -> None:
    """Give every BatchNorm2d under ``module`` this ``eps`` and ``momentum`` (parameters unchanged)."""
    for child in module.modules():
        if isinstance(child, nn.BatchNorm2d):
            child.eps, child.momentum = eps, momentum
