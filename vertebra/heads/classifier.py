"""The ``classifier`` head: global pooling of the deepest level, then the family's torchvision classifier.

The model is ``model.backbone`` (the :class:`~vertebra.backbones.Backbone`) plus ``model.head``, whose
``head.classifier`` is shaped like the family's torchvision classifier — EfficientNet: Dropout, Linear;
MobileNetV3: Linear(C, hidden), Hardswish, Dropout, Linear — so a torchvision classification checkpoint
loads with two prefix rewrites (``features.`` -> ``backbone.features.``, ``classifier.`` ->
``head.classifier.``), declared in ``model.weights_key_map``, and gives the same logits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..inputs import check_batch
from ..validation import check_choice, check_range
from ._base import Requirements, requires
from ._levels import input_channels

__all__ = ["classifier"]

POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


class ClassifierHead(nn.Module):
    """Pool, flatten, then ``classifier`` (optionally with a hidden layer, MobileNetV3-style)."""

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float, hidden: int | None,
                 pool: str = "avg"):
        super().__init__()
        self.pool = POOLS[pool](1)
        if hidden:
            self.classifier = nn.Sequential(nn.Linear(in_channels, hidden), nn.Hardswish(inplace=True),
                                            nn.Dropout(p=dropout, inplace=True), nn.Linear(hidden, num_classes))
            for linear in (self.classifier[0], self.classifier[3]):  # torchvision MobileNetV3's init
                nn.init.normal_(linear.weight, 0, 0.01)
                nn.init.zeros_(linear.bias)
        else:
            self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(in_channels, num_classes))
            bound = 1.0 / math.sqrt(num_classes)  # torchvision EfficientNet's init
            nn.init.uniform_(self.classifier[1].weight, -bound, bound)
            nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(x), 1))


class Classifier(nn.Module):
    """``backbone`` -> deepest returned level -> ``head``; ``forward(images) -> logits (N, num_classes)``."""

    def __init__(self, backbone: nn.Module, head: ClassifierHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.level = backbone.feature_info[-1].name

    def forward(self, x: Tensor) -> Tensor:
        check_batch(x, self, channels=input_channels(self.backbone))
        return self.head(self.backbone(x)[self.level])

    @property
    def weights_key_map(self):
        """torchvision classification names -> ours: ``features.*`` -> ``backbone.features.*``,
        ``classifier.*`` -> ``head.classifier.*``."""
        from ..weights import KeyMap

        return KeyMap.torchvision_classification(prefix="backbone.", classifier="head.classifier.")


@requires(lambda **kwargs: Requirements(min_levels=1))
def classifier(backbone: nn.Module, num_classes: int = 1000, dropout: float | None = None,
               pool: str = "avg") -> Classifier:
    """Image classifier on any backbone: pools the deepest level, returns logits.

    Args:
        num_classes: output logits (1000 loads torchvision's ImageNet checkpoints).
        dropout: before the last linear layer; ``None`` takes the family's default from
            ``backbone.meta`` (EfficientNet-B0 0.2 ... B7 0.5, MobileNetV3 0.2), 0.2 without meta.
        pool: ``"avg"`` (the papers') or ``"max"`` global pooling.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"must be a positive integer, got {num_classes!r}", path="num_classes")
    check_choice(pool, tuple(POOLS), "pool")
    meta = getattr(backbone, "meta", None)
    if dropout is None:
        dropout = getattr(meta, "classifier_dropout", 0.2)
    dropout = check_range(dropout, "dropout", low=0, high=1)
    hidden = getattr(meta, "classifier_hidden", None)
    head = ClassifierHead(backbone.feature_info[-1].channels, num_classes, dropout=dropout,
                          hidden=hidden, pool=pool)
    return Classifier(backbone, head)
