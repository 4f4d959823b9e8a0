"""transforms.v2 pipelines move boxes and masks with the pixels, drop degenerate boxes, and
produce the dtypes / value ranges each task's models expect."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from vertebra.data import (IMAGENET_MEAN, IMAGENET_STD, CocoDetection, classification_transforms,
                           collate_detection, detection_transforms, segmentation_transforms)
from vertebra.errors import ConfigError


def test_train_detection_transforms_keep_boxes_masks_and_pixels_together(shapes):
    plain = CocoDetection(shapes.train_images, shapes.train_annotations, with_masks=True)
    augmented = CocoDetection(shapes.train_images, shapes.train_annotations, detection_transforms(train=True),
                              with_masks=True)
    flipped_seen = unflipped_seen = 0
    for seed in range(6):
        torch.manual_seed(seed)
        image, target = augmented[seed % len(augmented)]
        _, original = plain[seed % len(plain)]
        assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
        assert target["labels"].tolist() == original["labels"].tolist()
        masks = target["masks"]
        flipped = torch.equal(masks, original["masks"].flip(-1))
        assert flipped or torch.equal(masks, original["masks"])
        flipped_seen += flipped
        unflipped_seen += not flipped
        boxes = original["boxes"].as_subclass(torch.Tensor).clone()
        if flipped:
            boxes[:, [0, 2]] = 64 - boxes[:, [2, 0]]
        torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), boxes)
        # the masks' own pixel extents agree with the boxes (within the polygon rasterisation)
        mask_boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # last pixel is inclusive
        torch.testing.assert_close(mask_boxes, boxes, atol=1.5, rtol=0)
    assert flipped_seen and unflipped_seen


def test_sanitize_drops_degenerate_boxes_with_their_labels_and_masks():
    image = tv_tensors.Image(torch.zeros(3, 20, 20, dtype=torch.uint8))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[2.0, 2, 9, 9], [5, 5, 5, 12], [3, 4, 8, 4]]),
                                                format="XYXY", canvas_size=(20, 20)),
              "labels": torch.tensor([1, 2, 3]), "masks": tv_tensors.Mask(torch.ones(3, 20, 20, dtype=torch.uint8)),
              "image_id": 4}
    _, out = detection_transforms(train=True)(image, target)
    assert out["labels"].tolist() == [1] and out["boxes"].shape == (1, 4) and out["masks"].shape == (1, 20, 20)
    assert out["image_id"] == 4


def test_eval_detection_transforms_are_deterministic_and_unnormalised(shapes):
    ds = CocoDetection(shapes.val_images, shapes.val_annotations, detection_transforms(train=False))
    raw = CocoDetection(shapes.val_images, shapes.val_annotations)
    image, target = ds[1]
    raw_image, raw_target = raw[1]
    torch.testing.assert_close(image, raw_image.float() / 255)
    torch.testing.assert_close(target["boxes"], raw_target["boxes"])


def test_detection_size_resizes_the_shorter_side_and_the_boxes():
    image = tv_tensors.Image(torch.zeros(3, 40, 80, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 4, 20, 24]]), format="XYXY", canvas_size=(40, 80))
    out_image, out = detection_transforms(train=False, size=20)(image, {"boxes": boxes, "labels": torch.tensor([1])})
    assert out_image.shape == (3, 20, 40)
    assert out["boxes"].tolist() == [[5.0, 2.0, 10.0, 12.0]]


def test_segmentation_transforms_normalise_images_and_keep_masks_integral():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.full((3, 48, 64), 255, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 4, (48, 64), dtype=torch.int64))
    for train in (True, False):
        out_image, out_mask = segmentation_transforms(train, size=32)(image, mask)
        assert out_image.shape == (3, 32, 32) and out_image.dtype == torch.float32
        expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        torch.testing.assert_close(out_image[:, 0, 0], expected)
        assert isinstance(out_mask, tv_tensors.Mask) and out_mask.shape == (32, 32)
        assert out_mask.dtype == torch.int64 and set(out_mask.unique().tolist()) <= {0, 1, 2, 3}


def test_classification_transforms_output_size():
    image = tv_tensors.Image(torch.zeros(3, 50, 70, dtype=torch.uint8))
    for train in (True, False):
        assert classification_transforms(train, size=32)(image).shape == (3, 32, 32)


@pytest.mark.parametrize("factory", [detection_transforms, segmentation_transforms, classification_transforms])
def test_bad_size_is_a_config_error(factory):
    with pytest.raises(ConfigError, match="size must be a positive integer"):
        factory(True, size=0)


def test_collate_detection_keeps_lists(shapes):
    ds = CocoDetection(shapes.train_images, shapes.train_annotations, detection_transforms(train=False))
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_detection)))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert [t["image_id"] for t in targets] == ds.ids[:3]
