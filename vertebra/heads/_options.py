"""The torchvision key maps the dense and detection heads share (their checkpoints' layouts)."""

from __future__ import annotations

__all__: list[str] = []


def torchvision_dense_key_map():
    """torchvision's segmentation models keep the bare ``features`` layers as ``backbone.N``;
    vertebra keeps the whole Backbone at ``backbone`` (``backbone.features.N``).  Heads keep
    torchvision's names (``classifier``, ``aux_classifier``), so one rule is the whole map."""
    from ..weights import KeyMap

    return KeyMap(rules=[("backbone.", "backbone.features.")])


def torchvision_detection_key_map():
    """torchvision's detection models wrap ``features`` in an IntermediateLayerGetter at
    ``backbone.body.N``; vertebra's FPN wrapper keeps the Backbone there (``backbone.body.features.N``).
    FPN, RPN and ROI heads are torchvision's own modules under torchvision's names."""
    from ..weights import KeyMap

    return KeyMap(rules=[("backbone.body.", "backbone.body.features.")])
