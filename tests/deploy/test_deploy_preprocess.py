"""Preprocessing equals training's evaluation transforms; outputs map back to the original frame."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from vertebra.data import IMAGENET_MEAN, IMAGENET_STD, classification_transforms, segmentation_transforms
from vertebra.deploy.preprocess import Geometry, boxes_to_original, dense_to_original, preprocess, unseen
from vertebra.weights.artifact import Preprocessing

IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _image(height: int, width: int) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(height * width),
                         dtype=torch.uint8)


@pytest.mark.parametrize("size", [(50, 70), (90, 40)])
def test_square_equals_the_segmentation_eval_transform(size):
    image = _image(*size)
    tensor, geometry = preprocess(image, Preprocessing("square", 64, **IMAGENET))
    expected = segmentation_transforms(False, 64)(tv_tensors.Image(image))
    torch.testing.assert_close(tensor, expected.as_subclass(torch.Tensor), rtol=0, atol=0)
    assert geometry == Geometry(size, (64, 64), (0, 0, 64, 64))


@pytest.mark.parametrize("size", [(50, 70), (90, 40), (32, 32)])
def test_shorter_crop_equals_the_classification_eval_transform(size):
    image = _image(*size)
    tensor, geometry = preprocess(image, Preprocessing("shorter_crop", 37, 32, **IMAGENET))
    expected = classification_transforms(False, 32)(tv_tensors.Image(image))
    torch.testing.assert_close(tensor, expected.as_subclass(torch.Tensor), rtol=0, atol=0)
    assert geometry.input_size == (32, 32) and min(geometry.resized) == 37


def test_none_keeps_pixels_in_0_1_without_normalising():
    image = _image(40, 30)
    tensor, geometry = preprocess(image, Preprocessing("none"))
    torch.testing.assert_close(tensor, image.float() / 255)
    assert geometry == Geometry((40, 30), (40, 30), (0, 0, 40, 30))


def test_boxes_go_back_through_resize_and_crop():
    geometry = Geometry(original=(100, 200), resized=(50, 100), crop=(5, 10, 40, 40))
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [30.0, 30.0, 200.0, 200.0]])
    out = boxes_to_original(boxes, geometry)
    torch.testing.assert_close(out[0], torch.tensor([20.0, 10.0, 100.0, 90.0]))
    torch.testing.assert_close(out[1], torch.tensor([80.0, 70.0, 200.0, 100.0]))   # clipped to the image
    assert boxes_to_original(torch.zeros(0, 4), geometry).shape == (0, 4)


def test_dense_maps_go_back_and_the_cropped_away_border_is_unseen():
    geometry = Geometry(original=(8, 12), resized=(4, 6), crop=(0, 1, 4, 4))
    maps = torch.ones(1, 2, 4, 4)
    out = dense_to_original(maps, geometry)
    assert out.shape == (1, 2, 8, 12)
    outside = unseen(geometry)
    assert outside.shape == (8, 12)
    assert outside[:, :2].all() and outside[:, -2:].all() and not outside[:, 2:-2].any()
    assert (out[0, 0][~outside] > 0.99).all()
    assert unseen(Geometry((8, 8), (4, 4), (0, 0, 4, 4))) is None
