"""Helpers for the head tests: which backbones stand for each family, small settings, detection targets.

Tests parametrize over ``registry.list_heads()``; backbones are the smallest variant of each
built-in family (``FAMILY_SMALLEST``), a table that ``test_family_table_is_complete`` checks against
the registry so a new family cannot be silently left out.
"""

from __future__ import annotations

import torch
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.ssd import SSD

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
# One-stage detectors: a narrow pyramid and few candidates (the head towers run on every level).
_ONE_STAGE_SMALL = {"num_classes": 3, "min_size": 64, "max_size": 96, "fpn_channels": 32, "detections_per_img": 10,
                    "topk_candidates": 50}
SMALL_KWARGS: dict[str, dict] = {
    "fasterrcnn_fpn": _DETECTION_SMALL,
    "maskrcnn_fpn": _DETECTION_SMALL,
    "retinanet_fpn": _ONE_STAGE_SMALL,
    "fcos_fpn": {**_ONE_STAGE_SMALL, "fpn_channels": 64},  # GroupNorm(32): 2 channels a group on a 1x1 P7
    "ssdlite": {"num_classes": 3, "size": 64, "width_mult": 0.25, "detections_per_img": 10, "topk_candidates": 50},
    "deeplabv3": {"num_classes": 3, "aux_loss": True},
    "fcn": {"num_classes": 3, "aux_loss": True},
    "unetplusplus": {"num_classes": 3, "decoder_channels": [32, 16, 16, 8, 8]},
    "manet": {"num_classes": 3, "decoder_channels": [32, 16, 16, 8, 8], "pab_channels": 16},
    "pspnet": {"num_classes": 3, "psp_out_channels": 64},
    "segformer": {"num_classes": 3, "segmentation_channels": 32},
}
# The loss dict each detector class returns in train() mode (torchvision's names).
DETECTION_LOSSES = {
    GeneralizedRCNN: {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    RetinaNet: {"classification", "bbox_regression"},
    FCOS: {"classification", "bbox_regression", "bbox_ctrness"},
    SSD: {"classification", "bbox_regression"},
}
# Input size (H, W) for the dense tests where 64x96 is too small: PAN's attention max-pools the
# stride-32 map three times (8 x 32 = 256 px; 128 at its default output stride 16).
INPUT_SIZE = {"pan": (128, 128)}


def small_kwargs(head: str) -> dict:
    return dict(SMALL_KWARGS.get(head, {"num_classes": 3}))


def is_detector(model: torch.nn.Module) -> bool:
    return isinstance(model, tuple(DETECTION_LOSSES))


def detection_losses(model: torch.nn.Module) -> set[str]:
    return next(set(keys) for cls, keys in DETECTION_LOSSES.items() if isinstance(model, cls))


def input_size(head: str) -> tuple[int, int]:
    return INPUT_SIZE.get(head, (64, 96))


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
