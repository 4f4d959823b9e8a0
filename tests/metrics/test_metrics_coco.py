"""CocoEvaluator: ground truth scores AP 1.0, a shifted prediction scores lower, results agree
with pycocotools' own loadRes path, and the state is plain data that merges across ranks."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from vertebra.errors import ConfigError, InputError
from vertebra.metrics import COCO_STAT_NAMES, CocoEvaluator


def test_ground_truth_as_predictions_scores_one(shapes_val, ground_truth, as_predictions):
    evaluator = CocoEvaluator(shapes_val.coco, ("bbox", "segm"), label_to_category_id=shapes_val.label_to_category_id)
    evaluator.update(as_predictions(ground_truth))
    result = evaluator.compute()
    for key in ("AP", "AP50", "AP75", "AR100", "segm_AP", "segm_AP50", "segm_AP75"):
        assert result[key] == pytest.approx(1.0), key
    assert set(result) == set(COCO_STAT_NAMES) | {f"segm_{n}" for n in COCO_STAT_NAMES}
    assert "Average Precision" in evaluator.summaries["bbox"]


def test_shifted_predictions_score_lower(shapes_val, ground_truth, as_predictions):
    evaluator = CocoEvaluator(shapes_val.coco, ("bbox", "segm"))
    evaluator.update(as_predictions(ground_truth, shift=4))
    result = evaluator.compute()
    assert 0.0 < result["AP"] < 0.9 and 0.0 < result["segm_AP"] < 0.9
    evaluator.update(as_predictions(ground_truth, shift=30))  # replaces the earlier records
    assert evaluator.compute()["AP50"] < 0.2


def test_wrong_labels_score_zero(shapes_val, ground_truth, as_predictions):
    predictions = as_predictions(ground_truth)
    for p in predictions.values():
        p["labels"] = p["labels"] % 3 + 1  # every shape called the next class
    evaluator = CocoEvaluator(shapes_val.coco, ("bbox",))
    evaluator.update(predictions)
    assert evaluator.compute()["AP"] == 0.0


def test_agrees_with_pycocotools_loadres(shapes_val, ground_truth, as_predictions):
    generator = torch.Generator().manual_seed(0)
    predictions = as_predictions(ground_truth, scores=lambda n: torch.rand(n, generator=generator))
    for p in predictions.values():  # jitter boxes, add a false positive per image
        p["boxes"] = p["boxes"] + torch.randn(p["boxes"].shape, generator=generator) * 3
        p["boxes"] = torch.cat([p["boxes"], torch.tensor([[5.0, 5, 30, 30]])])
        p["scores"] = torch.cat([p["scores"], torch.tensor([0.5])])
        p["labels"] = torch.cat([p["labels"], torch.tensor([2])])
        p["masks"] = torch.cat([p["masks"], torch.zeros(1, 1, 64, 64)])
        p["masks"][-1, 0, 5:30, 5:30] = 0.9
    ours = CocoEvaluator(shapes_val.coco, ("bbox", "segm"))
    ours.update(predictions)
    result = ours.compute()
    # the reference: records handed to COCO.loadRes, one list per iou type
    records = [r for rs in ours.predictions.values() for r in rs]
    for iou_type, prefix in (("bbox", ""), ("segm", "segm_")):
        keep = ("bbox",) if iou_type == "bbox" else ("segmentation",)
        dt = shapes_val.coco.loadRes([{k: v for k, v in r.items() if k in keep + ("image_id", "category_id", "score")}
                                      for r in records])
        reference = COCOeval(shapes_val.coco, dt, iou_type)
        reference.params.imgIds = sorted(ground_truth)
        reference.evaluate(), reference.accumulate(), reference.summarize()
        ours_stats = [result[prefix + n] for n in COCO_STAT_NAMES]
        np.testing.assert_allclose(ours_stats, reference.stats, atol=1e-12)
        assert 0.1 < reference.stats[0] < 0.95  # a non-trivial operating point


def test_zero_predictions_score_zero(shapes_val, ground_truth):
    evaluator = CocoEvaluator(shapes_val.coco, ("bbox", "segm"))
    assert evaluator.compute()["AP"] == 0.0  # nothing seen: all images, no detections
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 1, 64, 64)}
    evaluator.update({image_id: empty for image_id in ground_truth})
    result = evaluator.compute()
    assert result["AP"] == 0.0 and result["AP50"] == 0.0 and result["segm_AP"] == 0.0


def test_only_seen_images_are_scored(shapes_val, ground_truth, as_predictions):
    first_two = dict(list(ground_truth.items())[:2])
    evaluator = CocoEvaluator(shapes_val.coco)
    evaluator.update(as_predictions(first_two))
    assert evaluator.compute()["AP"] == pytest.approx(1.0)


def test_state_is_plain_data_and_merges_once_per_image(shapes_val, ground_truth, as_predictions):
    items = list(as_predictions(ground_truth, shift=2).items())
    single = CocoEvaluator(shapes_val.coco, ("bbox", "segm"))
    single.update(dict(items))
    rank0, rank1 = (CocoEvaluator(shapes_val.coco, ("bbox", "segm")) for _ in range(2))
    rank0.update(dict(items[:6]))
    rank1.update(dict(items[5:]))  # image 6 on both ranks, like DistributedSampler padding
    state = rank1.state()
    json.dumps(state)  # only plain types inside
    rank0.merge([pickle.loads(pickle.dumps(state))])
    assert rank0.compute() == single.compute()


def test_accepts_an_annotation_file_path(shapes_val, ground_truth, as_predictions):
    evaluator = CocoEvaluator(shapes_val.ann_file)
    evaluator.update(as_predictions(ground_truth))
    assert evaluator.compute()["AP"] == pytest.approx(1.0)


def test_bad_predictions_are_input_errors(shapes_val, ground_truth, as_predictions):
    image_id, target = next(iter(as_predictions(ground_truth).items()))
    evaluator = CocoEvaluator(shapes_val.coco, ("bbox", "segm"))
    with pytest.raises(InputError, match="image id 9999, which is not in the ground truth"):
        evaluator.update({9999: target})
    with pytest.raises(InputError, match=r"labels \[7\] have no COCO category"):
        evaluator.update({image_id: {**target, "labels": torch.full_like(target["labels"], 7)}})
    with pytest.raises(InputError, match=r"lacks \['masks'\]"):
        evaluator.update({image_id: {k: v for k, v in target.items() if k != "masks"}})
    with pytest.raises(InputError, match="masks of shape .* at the original image size"):
        evaluator.update({image_id: {**target, "masks": target["masks"][..., :32]}})
    with pytest.raises(InputError, match="same length"):
        evaluator.update({image_id: {**target, "scores": torch.ones(len(target["boxes"]) + 1)}})


@pytest.mark.parametrize("iou_types", [(), ("keypoints",), ("bbox", "bbox")])
def test_bad_iou_types(shapes_val, iou_types):
    with pytest.raises(ConfigError, match="iou_types"):
        CocoEvaluator(shapes_val.coco, iou_types)


def test_label_map_must_point_at_real_categories(shapes_val):
    with pytest.raises(ConfigError, match=r"category ids \[42\]"):
        CocoEvaluator(shapes_val.coco, label_to_category_id={1: 42})


@pytest.mark.parametrize("segmentation", [[], [[1, 2]], [[1.0, 1.0, 5.0, 1.0]], None, "missing"])
def test_mask_ap_leaves_out_ground_truth_without_a_mask_instead_of_crashing(segmentation):
    """The data sets skip such annotations; COCOeval's mask IoU would raise (IndexError, TypeError ...)."""
    from pycocotools.coco import COCO

    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0,
            "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}
    bad = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 8, 8], "area": 64, "iscrowd": 0}
    if segmentation != "missing":
        bad["segmentation"] = segmentation
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 32, "height": 32, "file_name": "a.png"}],
                  "categories": [{"id": 1, "name": "thing"}], "annotations": [good, bad]}
    gt.createIndex()
    mask = torch.zeros(1, 32, 32)
    mask[0, 2:12, 2:12] = 1
    with pytest.warns(UserWarning, match=r"leaves out 1 ground-truth annotation\(s\) .*ids \[2\]"):
        evaluator = CocoEvaluator(gt, ("bbox", "segm"))
    evaluator.update({1: {"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0]]), "scores": torch.tensor([0.9]),
                          "labels": torch.tensor([1]), "masks": mask}})
    metrics = evaluator.compute()
    assert metrics["segm_AP50"] == pytest.approx(1.0)   # the one usable instance, found
    assert metrics["AP50"] == pytest.approx(0.5, abs=0.01)  # boxes: both instances count, one found
    assert len(gt.dataset["annotations"]) == 2           # the caller's ground truth is untouched
