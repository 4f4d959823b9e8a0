"""Evaluation metrics whose state can be reduced across DDP ranks.

- :class:`CocoEvaluator`: COCO box / mask AP via pycocotools ``COCOeval``.
- :class:`SegmentationMetric`: mIoU and pixel accuracy from a confusion matrix.
- :func:`topk_accuracy` / :class:`TopKAccuracy`: classification accuracy.

Each accumulator has ``update``, ``synchronize`` (gathers or all-reduces across ranks when
``torch.distributed`` is initialised, otherwise does nothing), ``compute`` and ``reset``.
"""

from __future__ import annotations

from .classification import TopKAccuracy, topk_accuracy
from .coco import COCO_STAT_NAMES, CocoEvaluator
from .segmentation import SegmentationMetric

__all__ = ["CocoEvaluator", "COCO_STAT_NAMES", "SegmentationMetric", "topk_accuracy", "TopKAccuracy"]
