"""``preset="torchvision"`` on mobilenet_v3_large reproduces torchvision's dense models exactly.

Each test builds the torchvision model with random weights (nothing is downloaded), loads its
state_dict into the registry-built vertebra model through vertebra's weight-loading API (the model's
``weights_key_map``; strict: nothing missing, nothing left over) and compares outputs.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models import detection as tvd
from torchvision.models import segmentation as tvs
from torchvision.ops.misc import FrozenBatchNorm2d

from vertebra import registry
from vertebra.inference import inference_folding
from vertebra.weights import load_weights, named_weights


def _load_strictly(model, reference):
    report = load_weights(model, reference.state_dict())
    assert report.mapped and not report.missing and not report.unexpected and not report.dropped
    assert report.loaded == len(reference.state_dict())
    return model


def _randomise_batchnorm(model):
    """Non-trivial running statistics, so a wrong eps or a skipped BN layer would show."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def test_lraspp_equals_torchvision():
    reference = _randomise_batchnorm(tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)).eval()
    model = registry.build("lraspp", backbone="mobilenet_v3_large", preset="torchvision")
    _load_strictly(model, reference).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["out"], reference(x)["out"])


def test_deeplabv3_with_aux_equals_torchvision():
    reference = _randomise_batchnorm(
        tvs.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True)).eval()
    model = registry.build("deeplabv3", backbone="mobilenet_v3_large", preset="torchvision", aux_loss=True)
    _load_strictly(model, reference).eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert list(ours) == list(theirs) == ["out", "aux"]
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key])


def _settings(model) -> dict:
    """Everything a preset decides besides module shapes: resize, RPN/ROI limits, anchors."""
    rpn, roi = model.rpn, model.roi_heads
    return {"min_size": model.transform.min_size, "max_size": model.transform.max_size,
            "pre_nms": dict(rpn._pre_nms_top_n), "post_nms": dict(rpn._post_nms_top_n),
            "rpn_score": rpn.score_thresh, "rpn_nms": rpn.nms_thresh, "box_score": roi.score_thresh,
            "box_nms": roi.nms_thresh, "per_image": roi.detections_per_img,
            "anchor_sizes": rpn.anchor_generator.sizes, "ratios": rpn.anchor_generator.aspect_ratios,
            "roi_output": roi.box_roi_pool.output_size, "roi_sampling": roi.box_roi_pool.sampling_ratio}


@pytest.mark.parametrize("preset, builder, sizes", [
    # The 800/1333 preset is compared at a small resize (same override on both sides) to stay fast;
    # the 320 preset runs at its own sizes.
    ("torchvision", tvd.fasterrcnn_mobilenet_v3_large_fpn, {"min_size": 128, "max_size": 160}),
    ("torchvision_320", tvd.fasterrcnn_mobilenet_v3_large_320_fpn, {}),
])
def test_fasterrcnn_equals_torchvision(preset, builder, sizes):
    # box_score_thresh=0 keeps the top detections of an untrained model, so there is something to compare.
    reference = _randomise_batchnorm(builder(weights=None, weights_backbone=None, num_classes=91,
                                             box_score_thresh=0.0, **sizes)).eval()
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_large", preset=preset, num_classes=91,
                           box_score_thresh=0.0, **sizes)
    _load_strictly(model, reference).eval()
    assert _settings(model) == _settings(reference)
    if not sizes:
        assert (model.transform.min_size, model.transform.max_size) == ((320,), 640)

    images = [torch.rand(3, 96, 128)]
    # Bit for bit (BatchNorm as torchvision runs it): top-k and NMS turn rounding into different boxes.
    with torch.no_grad(), inference_folding(False):
        (ours,), (theirs,) = model(images), reference(images)
    assert len(theirs["boxes"]) > 0
    for key in ("boxes", "labels", "scores"):
        torch.testing.assert_close(ours[key], theirs[key])

    model.train()
    reference.train()
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 80.0]]), "labels": torch.tensor([5])}]
    torch.manual_seed(1)
    ours = model(images, targets)
    torch.manual_seed(1)
    theirs = reference(images, targets)
    assert set(ours) == set(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])


def test_frozen_bn_matches_torchvisions_pretrained_layout():
    """torchvision's COCO detectors are built with FrozenBatchNorm2d (no num_batches_tracked keys);
    ``frozen_bn=True`` gives the same state_dict keys, so those checkpoints load strictly."""
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor

    body = _mobilenet_extractor(mobilenet_v3_large(norm_layer=FrozenBatchNorm2d), True, 6)
    reference = tvd.FasterRCNN(body, 91, rpn_anchor_generator=AnchorGenerator(
        ((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3), rpn_score_thresh=0.05)
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_large", preset="torchvision", frozen_bn=True)
    mapped = {model.weights_key_map.map_key(key) for key in reference.state_dict()}
    assert mapped == set(model.state_dict())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    frozen = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 1e-5 for m in frozen)
    _load_strictly(model, _randomise_batchnorm(reference))


def test_ssdlite_equals_torchvision():
    """``ssdlite(preset="torchvision")`` is ``ssdlite320_mobilenet_v3_large`` (reduced tail, expansion-layer
    tap, BatchNorm momentum 0.03): strict load, same detections, same losses, same settings."""
    # score_thresh=0 keeps the top detections of an untrained model, so there is something to compare.
    reference = _randomise_batchnorm(tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                       score_thresh=0.0)).eval()
    entry = named_weights()["ssdlite320_mobilenet_v3_large.coco"]  # the COCO checkpoint's model is this one
    model = registry.build(entry.head, backbone=entry.backbone, **entry.head_kwargs, score_thresh=0.0)
    assert entry.head_kwargs == {"num_classes": 91, "preset": "torchvision"}
    _load_strictly(model, reference).eval()
    assert model.config["backbone"] == {"name": "mobilenet_v3_large"}  # reduced_tail: the preset's default
    for attribute in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates"):
        assert getattr(model, attribute) == getattr(reference, attribute)
    assert model.transform.fixed_size == reference.transform.fixed_size == (320, 320)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {m.momentum for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.03}

    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 72)]
    with torch.no_grad(), inference_folding(False):
        ours, theirs = model(images), reference(images)
    for mine, reference_detections in zip(ours, theirs):
        assert len(reference_detections["boxes"]) > 0
        for key in ("boxes", "labels", "scores"):
            torch.testing.assert_close(mine[key], reference_detections[key])

    model.train()
    reference.train()
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 80.0]]), "labels": torch.tensor([5])}] * 2
    ours, theirs = model(images, targets), reference(images, targets)
    assert set(ours) == set(theirs) == {"bbox_regression", "classification"}
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])
