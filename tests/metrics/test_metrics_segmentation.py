"""SegmentationMetric: perfect predictions give mIoU 1, shifted ones less, and the numbers match
scikit-learn's per-class Jaccard and accuracy on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, jaccard_score

from vertebra.data import CocoSemantic
from vertebra.errors import ConfigError, InputError
from vertebra.metrics import SegmentationMetric


def test_ground_truth_scores_one_and_a_shift_scores_lower(shapes_val):
    semantic = CocoSemantic(shapes_val.image_dir, shapes_val.ann_file)
    masks = torch.stack([semantic[i][1].as_subclass(torch.Tensor) for i in range(len(semantic))])
    masks[:, :2, :2] = 255  # some ignored pixels, too
    perfect, shifted = SegmentationMetric(semantic.num_classes), SegmentationMetric(semantic.num_classes)
    perfect.update(masks.clamp(max=3), masks)  # ignored pixels may hold any prediction
    shifted.update(torch.roll(masks, 5, dims=-1).clamp(max=3), masks)
    assert perfect.compute()["mIoU"] == 1.0 and perfect.compute()["pixel_acc"] == 1.0
    assert perfect.compute()["per_class_iou"] == [1.0] * 4
    assert shifted.compute()["mIoU"] < 0.8 and shifted.compute()["pixel_acc"] < 1.0


def test_matches_sklearn_on_random_batches():
    generator = torch.Generator().manual_seed(0)
    metric = SegmentationMetric(5)
    targets, predictions = [], []
    for _ in range(3):
        logits = torch.randn(2, 5, 9, 11, generator=generator)
        target = torch.randint(0, 5, (2, 9, 11), generator=generator)
        target[torch.rand(target.shape, generator=generator) < 0.1] = 255
        metric.update(logits, target)
        keep = target != 255
        targets.append(target[keep]), predictions.append(logits.argmax(1)[keep])
    y_true, y_pred = torch.cat(targets).numpy(), torch.cat(predictions).numpy()
    result = metric.compute()
    expected = jaccard_score(y_true, y_pred, labels=list(range(5)), average=None)
    np.testing.assert_allclose(result["per_class_iou"], expected, rtol=1e-12)
    assert result["mIoU"] == pytest.approx(expected.mean())
    assert result["pixel_acc"] == pytest.approx(accuracy_score(y_true, y_pred))


def test_logits_and_labels_agree_and_unbatched_inputs_work():
    logits = torch.randn(3, 6, 7)
    target = torch.randint(0, 3, (6, 7))
    a, b = SegmentationMetric(3), SegmentationMetric(3)
    a.update(logits, target)
    b.update(logits.argmax(0)[None], target[None])
    assert torch.equal(a.confusion, b.confusion) and a.confusion.sum() == 42


def test_class_never_at_stake_is_left_out_of_the_mean():
    metric = SegmentationMetric(3)
    target = torch.tensor([[0, 0, 1, 1]])
    metric.update(torch.tensor([[0, 1, 1, 1]]), target)
    result = metric.compute()
    assert math.isnan(result["per_class_iou"][2])
    assert result["per_class_iou"][:2] == [0.5, pytest.approx(2 / 3)]
    assert result["mIoU"] == pytest.approx((0.5 + 2 / 3) / 2)
    metric.reset()
    assert metric.confusion.sum() == 0 and math.isnan(metric.compute()["mIoU"])


def test_bad_inputs():
    metric = SegmentationMetric(3)
    with pytest.raises(InputError, match="upsample logits"):
        metric.update(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.int64))
    with pytest.raises(InputError, match=r"expected \(N, 3, H, W\)"):
        metric.update(torch.randn(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64))
    with pytest.raises(InputError, match=r"target labels \[7\] are outside 0..2"):
        metric.update(torch.zeros(1, 4, 4, dtype=torch.int64), torch.full((1, 4, 4), 7))
    with pytest.raises(InputError, match=r"predicted labels \[3\]"):
        metric.update(torch.full((1, 4, 4), 3), torch.zeros(1, 4, 4, dtype=torch.int64))
    with pytest.raises(InputError, match="integer"):
        metric.update(torch.zeros(1, 4, 4, dtype=torch.int64), torch.zeros(1, 4, 4))
    assert metric.confusion.sum() == 0  # nothing half-counted
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationMetric(0)
    with pytest.raises(ConfigError, match="ignore_index 1 is a real class"):
        SegmentationMetric(3, ignore_index=1)
