"""Semantic segmentation scores from one confusion matrix: mIoU, pixel accuracy, per-class IoU.

The whole state is a (C, C) int64 tensor, so distributed evaluation is one ``all_reduce`` (sum)
and the scores are exactly those of a single pass over the data set, not an average of
per-batch or per-rank scores.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, InputError

__all__ = ["SegmentationMetric"]


class SegmentationMetric:
    """Confusion-matrix segmentation metric (rows: target class, columns: predicted class).

    Args:
        num_classes: number of classes including background (the model's output channels).
        ignore_index: target value whose pixels are not scored (255, as in VOC and
            :class:`vertebra.data.CocoSemantic`).

    State: :attr:`confusion`, a (C, C) int64 tensor on the device of the targets;
    :meth:`synchronize` all-reduces it (sum) across ranks.

    ``compute()`` returns ``{"mIoU", "pixel_acc", "per_class_iou"}``.  A class that appears neither
    in the targets nor in the predictions has IoU ``nan`` and is left out of ``mIoU``
    (it was never at stake); a class that was predicted but never present scores 0.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"SegmentationMetric: num_classes must be a positive integer, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ConfigError(f"SegmentationMetric: ignore_index {ignore_index} is a real class "
                              f"(0..{num_classes - 1}); use a value outside that range, e.g. 255")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``prediction`` is logits (N, C, H, W) or labels (N, H, W); ``target`` (N, H, W).

        Unbatched (C, H, W) / (H, W) inputs work too.  Predictions must already be at the
        target's resolution.
        """
        if prediction.is_floating_point():
            if prediction.dim() not in (3, 4) or prediction.shape[-3] != self.num_classes:
                raise InputError(f"logits of shape {tuple(prediction.shape)}; expected (N, {self.num_classes}, H, W) "
                                 f"or ({self.num_classes}, H, W) for num_classes={self.num_classes}")
            prediction = prediction.argmax(dim=-3)
        if prediction.shape != target.shape:
            raise InputError(f"prediction of shape {tuple(prediction.shape)} does not match target "
                             f"{tuple(target.shape)}; upsample logits to the target size first "
                             f"(F.interpolate(logits, size=target.shape[-2:], mode='bilinear'))")
        if target.is_floating_point() or prediction.is_floating_point():
            raise InputError(f"targets and label predictions must be integer tensors, got {target.dtype}")
        if self.confusion.device != target.device:
            self.confusion = self.confusion.to(target.device)
        prediction = prediction.to(target.device)
        valid = target != self.ignore_index
        target, prediction = target[valid].long(), prediction[valid].long()
        for name, values in (("target", target), ("predicted", prediction)):
            bad = values[(values < 0) | (values >= self.num_classes)]
            if bad.numel():
                raise InputError(f"{name} labels {bad.unique().tolist()[:10]} are outside 0..{self.num_classes - 1} "
                                 f"and not ignore_index={self.ignore_index}; check num_classes")
        index = target * self.num_classes + prediction
        self.confusion += torch.bincount(index, minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def synchronize(self) -> None:
        """Sum the confusion matrices of all ranks (no-op without torch.distributed)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.confusion)

    def reset(self) -> None:
        self.confusion.zero_()

    def compute(self) -> dict[str, float | list[float]]:
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - true_positive
        iou = true_positive / union  # 0/0 -> nan: the class was never at stake
        total = confusion.sum()
        present = ~torch.isnan(iou)
        return {
            "mIoU": float(iou[present].mean()) if present.any() else math.nan,
            "pixel_acc": float(true_positive.sum() / total) if total > 0 else math.nan,
            "per_class_iou": [float(v) for v in iou],
        }
