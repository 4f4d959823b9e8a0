"""Fixtures for the metric tests: a small shapes data set with instance masks."""

from __future__ import annotations

import pytest
import torch

from vertebra.data import CocoDetection, generate_shapes


@pytest.fixture(scope="session")
def shapes_val(tmp_path_factory):
    paths = generate_shapes(tmp_path_factory.mktemp("shapes_metrics"), num_train=1, num_val=10,
                            image_size=64, seed=7)
    return CocoDetection(paths.val_images, paths.val_annotations, with_masks=True)


@pytest.fixture(scope="session")
def ground_truth(shapes_val):
    """``{image_id: target}`` for every validation image (boxes, labels, masks)."""
    return {target["image_id"]: target for _, target in (shapes_val[i] for i in range(len(shapes_val)))}


@pytest.fixture(scope="session")
def as_predictions():
    """``as_predictions(targets, shift=0, scores=None)``: targets dressed as detector outputs."""
    return _as_predictions


def _as_predictions(targets, *, shift=0.0, scores=None):
    """Turn targets into detector outputs; ``shift`` moves boxes and masks right by that many pixels."""
    out = {}
    for image_id, target in targets.items():
        boxes = target["boxes"].as_subclass(torch.Tensor).clone()
        boxes[:, [0, 2]] += shift
        masks = torch.roll(target["masks"].as_subclass(torch.Tensor), int(shift), dims=-1).float()
        out[image_id] = {"boxes": boxes, "labels": target["labels"].clone(), "masks": masks[:, None],
                         "scores": torch.ones(len(boxes)) if scores is None else scores(len(boxes))}
    return out
