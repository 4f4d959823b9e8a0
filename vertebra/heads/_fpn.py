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
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..features import FeatureSpec

__all__: list[str] = []


class BackboneWithFPN(nn.Module):
    """``body`` (the backbone) -> chosen levels -> ``fpn`` -> ``{level: map, ..., extra maps}``.

    Every output has ``out_channels`` channels.  The extra levels are torchvision's: by default
    LastLevelMaxPool's ``"pool"`` (stride 2 on the deepest level, used by the RPN only); RetinaNet
    and FCOS pass ``extra="p6p7"`` for LastLevelP6P7's ``"p6"``, ``"p7"`` (two strided 3x3 convs on
    the deepest pyramid level, as torchvision's ``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn``).
    """

    def __init__(self, body: nn.Module, levels: Sequence[FeatureSpec], out_channels: int = 256, *,
                 extra: str = "pool"):
        super().__init__()
        self.body = body
        self.level_names = [spec.name for spec in levels]
        blocks = LastLevelMaxPool() if extra == "pool" else LastLevelP6P7(out_channels, out_channels)
        self.extra_names = ["pool"] if extra == "pool" else ["p6", "p7"]
        self.fpn = FeaturePyramidNetwork([spec.channels for spec in levels], out_channels, extra_blocks=blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        features = self.body(x)
        return self.fpn(OrderedDict((name, features[name]) for name in self.level_names))

