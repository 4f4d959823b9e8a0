"""Helpers for the head tests: which backbones stand for each family, small settings, detection targets.

Tests parametrize over ``registry.list_heads()``; backbones are the smallest variant of each
built-in family (``FAMILY_SMALLEST``), a table that ``test_family_table_is_complete`` checks against
the registry so a new family cannot be silently left out.
"""

from __future__ import annotations

import torch
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from vertebra import registry

FAMILY_SMALLEST = {
    "efficientnet": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_s",
    "mobilenet_v3": "mobilenet_v3_small",
}
SMALLEST = sorted(FAMILY_SMALLEST.values())
HEADS = registry.list_heads()

# Small, fast settings per head: few classes, detection images resized to ~64-96 px and few sampled
# proposals (the mask branch's backward over hundreds of RoIs would dominate otherwise).
_DETECTION_SMALL = {"num_classes": 3, "min_size": 64, "max_size": 96, "box_detections_per_img": 10,
                    "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 32}
SMALL_KWARGS: dict[str, dict] = {
    "fasterrcnn_fpn": _DETECTION_SMALL,
    "maskrcnn_fpn": _DETECTION_SMALL,
    "deeplabv3": {"num_classes": 3, "aux_loss": True},
}


def small_kwargs(head: str) -> dict:
    return dict(SMALL_KWARGS.get(head, {"num_classes": 3}))


def is_detector(model: torch.nn.Module) -> bool:
    return isinstance(model, GeneralizedRCNN)


def detection_batch(count: int = 2, height: int = 64, width: int = 80, *, masks: bool = False,
                    seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """Random images with one or two boxes each (labels 1..2), optionally with matching masks."""
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for index in range(count):
        images.append(torch.rand(3, height, width, generator=generator))
        boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 70.0, 60.0]])[: 1 + index % 2]
        target = {"boxes": boxes, "labels": torch.tensor([1, 2])[: len(boxes)]}
        if masks:
            mask = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                mask[i, y0:y1, x0:x1] = 1
            target["masks"] = mask
        targets.append(target)
    return images, targets
