"""Every registered head on the smallest backbone of every family: train step and eval outputs.

Inputs are small (64-96 px, batch 2 in train mode, 1 in eval); the point is that every pair builds,
returns torchvision-style outputs of the right shapes, and trains (loss backpropagates into the
backbone), not speed or accuracy.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from heads_helpers import (FAMILY_SMALLEST, HEADS, SMALLEST, detection_batch, detection_losses, input_size,
                           is_detector, small_kwargs)
from vertebra import registry


def test_family_table_is_complete():
    """Every built-in backbone belongs to a family in FAMILY_SMALLEST, whose entry is its smallest member."""
    params = {}
    for name in registry.list_backbones():
        if registry.entry("backbone", name).plugin != registry.entry("backbone", SMALLEST[0]).plugin:
            continue  # third-party plugins are not ours to enumerate
        with torch.device("meta"):
            backbone = registry.build_backbone(name)
        family = backbone.meta.family
        assert family in FAMILY_SMALLEST, f"new family {family!r} ({name}): add its smallest variant"
        params.setdefault(family, {})[name] = sum(p.numel() for p in backbone.parameters())
    for family, sizes in params.items():
        assert sizes[FAMILY_SMALLEST[family]] == min(sizes.values()), family


@pytest.mark.parametrize("backbone", SMALLEST)
@pytest.mark.parametrize("head", HEADS)
def test_head_trains_and_infers_on_every_family(head, backbone):
    model = registry.build(head, backbone=backbone, **small_kwargs(head))
    classes = model.config.get("num_classes", 3)
    model.train()
    if is_detector(model):
        roi_heads = getattr(model, "roi_heads", None)
        with_masks = getattr(roi_heads, "mask_head", None) is not None
        images, targets = detection_batch(masks=with_masks)
        losses = model(images, targets)
        expected = detection_losses(model) | ({"loss_mask"} if with_masks else set())
        assert set(losses) == expected
        loss = sum(losses.values())
    else:
        size = input_size(head)
        x = torch.randn(2, 3, *size)
        out = model(x)
        if isinstance(out, dict):
            target = torch.randint(0, classes, (2, *size))
            assert out["out"].shape == (2, classes, *size)
            loss = F.cross_entropy(out["out"], target)
            if "aux" in out:
                assert out["aux"].shape == (2, classes, *size)
                loss = loss + 0.5 * F.cross_entropy(out["aux"], target)
        else:
            assert out.shape == (2, classes)
            loss = F.cross_entropy(out, torch.tensor([0, 1]))
    assert torch.isfinite(loss)
    loss.backward()
    stem = next(model.parameters())  # the first parameter is the backbone's stem conv
    assert stem.grad is not None and torch.isfinite(stem.grad).all()

    model.eval()
    with torch.no_grad():
        if is_detector(model):
            images, _ = detection_batch(count=1, height=72, width=88)
            (detections,) = model(images)
            count = len(detections["boxes"])
            assert detections["boxes"].shape == (count, 4)
            assert detections["labels"].shape == detections["scores"].shape == (count,)
            if "masks" in detections or with_masks:
                assert detections["masks"].shape == (count, 1, 72, 88)
        else:
            out = model(torch.randn(1, 3, *input_size(head)))
            if isinstance(out, dict):
                assert out["out"].shape == (1, classes, *input_size(head))
                assert torch.isfinite(out["out"]).all()
            else:
                assert out.shape == (1, classes)
