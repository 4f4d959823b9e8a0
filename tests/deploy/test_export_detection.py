"""Exported detectors (deploy.detection) against the eager torchvision model: 0, 1 and several
detections, two input sizes, one dynamic export per model, in pt2, ONNX Runtime and OpenVINO.

A random-weight detector scores every box about 1/num_classes; its classifier weights are scaled
up so that scores spread out, then the score threshold is set (from eager runs, before export) in a
gap of the pooled scores where the generated images give 0, 1 and 3+ detections.
"""

from __future__ import annotations

import pytest
import torch

from export_helpers import assert_same_detections, export_all, runners
from vertebra import registry
from vertebra.deploy.detection import ExportableDetector, paste_masks
from vertebra.errors import ExportError

SIZES = [(64, 80), (96, 72)]
SCORE_GAINS = (300.0, 3000.0, 30.0, 3.0, 30000.0)


def _images():
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, *size, generator=generator) * (i + 1) / 4 for size in SIZES for i in range(4)]


def _detector(head: str, backbone: str, *, counts: bool = True):
    """A detector whose score threshold gives 0, 1 and several detections on _images(); with
    ``counts=False`` a family where no gain spreads the scores enough keeps threshold 0 (many)."""
    torch.manual_seed(0)
    model = registry.build(head, backbone=backbone, num_classes=3, min_size=64, max_size=96,
                           box_score_thresh=0.0, rpn_post_nms_top_n_test=100).eval()
    weight = model.roi_heads.box_predictor.cls_score.weight
    original = weight.detach().clone()
    for gain in SCORE_GAINS:  # how far a family's random features spread the logits differs by 100x
        with torch.no_grad():
            weight.copy_(original * gain)
            scores = [model([image])[0]["scores"] for image in _images()]
        threshold = _threshold(scores)
        if threshold is not None:
            model.roi_heads.score_thresh = threshold
            return model
    if not counts:
        with torch.no_grad():
            weight.copy_(original * SCORE_GAINS[0])
        return model
    raise AssertionError(f"no classifier gain in {SCORE_GAINS} gives 0, 1 and several detections on {backbone}")


def _threshold(scores: list[torch.Tensor]) -> float | None:
    """A threshold in a clear gap of the scores that leaves 0, 1 and >= 3 detections among the images,
    and detections at both sizes."""
    values = torch.cat(scores).unique().sort(descending=True).values
    for high, low in zip(values[:-1].tolist(), values[1:].tolist()):
        if high - low < 5e-4:
            continue
        threshold = (high + low) / 2
        counts = [int((s > threshold).sum()) for s in scores]
        if 0 in counts and 1 in counts and max(counts) >= 3 and max(counts[:4]) >= 1 and max(counts[4:]) >= 1:
            return threshold
    return None


@pytest.mark.slow
@pytest.mark.parametrize("head", ["fasterrcnn_fpn", "maskrcnn_fpn"])
def test_exported_detector_matches_eager_for_0_1_and_many(head, tmp_path):
    model = _detector(head, "mobilenet_v3_small")
    run = runners(export_all(model, tmp_path, example_size=(64, 80)))
    counts = set()
    for image in _images():
        with torch.no_grad():
            expected = model([image])[0]
        counts.add(min(len(expected["boxes"]), 3))
        for fmt, runner in run.items():
            assert_same_detections(expected, runner(image[None]), f"{head} {fmt} {tuple(image.shape[1:])}")
    assert {0, 1, 3} <= counts  # zero, one and several detections were compared


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnet_b0", "efficientnet_v2_s"])
def test_detector_on_other_families_exports_with_torch_export(backbone):
    from vertebra.deploy.export import trace

    model = _detector("fasterrcnn_fpn", backbone, counts=False)
    program = trace(model, example_size=(64, 80)).module()
    for image in _images():
        with torch.no_grad():
            expected = model([image])[0]
        assert_same_detections(expected, list(program(image[None])), f"{backbone} pt2 {tuple(image.shape[1:])}")


def test_wrapper_equals_eager_including_masks():
    model = _detector("maskrcnn_fpn", "mobilenet_v3_small")
    wrapper = ExportableDetector(model)
    for image in _images():
        with torch.no_grad():
            expected, actual = model([image])[0], wrapper(image[None])
        assert_same_detections(expected, list(actual), "eager wrapper")


def test_paste_masks_equals_torchvision():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 1, 28, 28, generator=generator)
    corners = torch.rand(5, 2, generator=generator) * 60 - 5
    boxes = torch.cat([corners, corners + 3 + torch.rand(5, 2, generator=generator) * 40], dim=1)
    torch.testing.assert_close(paste_masks(masks, boxes, (70, 90)), paste_masks_in_image(masks, boxes, (70, 90)),
                               rtol=1e-5, atol=1e-5)


def test_non_detector_is_refused():
    with pytest.raises(ExportError, match="FasterRCNN"):
        ExportableDetector(torch.nn.Conv2d(3, 3, 1))
