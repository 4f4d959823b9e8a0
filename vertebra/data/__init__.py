"""Data: COCO-format data sets, the built-in shapes generator, transforms and collate functions.

The names below load on first use, so ``vertebra data shapes`` (numpy + Pillow only) does not pay
for importing torchvision.

- :func:`generate_shapes` writes the built-in COCO-format shapes data set.
- :class:`CocoDetection` (boxes, labels, optional instance masks), :class:`CocoSemantic` (class-index
  masks from the same COCO files), :class:`MaskFolderSegmentation`, :class:`ImageFolderClassification`.
- :func:`detection_transforms`, :func:`segmentation_transforms`, :func:`classification_transforms`
  (torchvision ``transforms.v2``) and :func:`collate_detection`.
- :func:`split_indices`, :class:`Split`, :func:`coco_subset`: a deterministic validation set held
  out of the training set (``data.val_split``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "generate_shapes": ".shapes",
    "ShapesPaths": ".shapes",
    "SHAPE_CATEGORIES": ".shapes",
    "CocoDetection": ".coco",
    "CocoSemantic": ".semantic",
    "COCO_VOC_CATEGORY_IDS": ".semantic",
    "MaskFolderSegmentation": ".semantic",
    "IGNORE_INDEX": ".semantic",
    "ImageFolderClassification": ".classification",
    "detection_transforms": ".transforms",
    "segmentation_transforms": ".transforms",
    "classification_transforms": ".transforms",
    "collate_detection": ".transforms",
    "batch_mix": ".transforms",
    "AUTO_AUGMENT": ".transforms",
    "IMAGENET_MEAN": ".transforms",
    "IMAGENET_STD": ".transforms",
    "split_indices": ".split",
    "Split": ".split",
    "coco_subset": ".split",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .classification import ImageFolderClassification
    from .coco import CocoDetection
    from .semantic import COCO_VOC_CATEGORY_IDS, IGNORE_INDEX, CocoSemantic, MaskFolderSegmentation
    from .shapes import SHAPE_CATEGORIES, ShapesPaths, generate_shapes
    from .split import Split, coco_subset, split_indices
    from .transforms import (AUTO_AUGMENT, IMAGENET_MEAN, IMAGENET_STD, batch_mix, classification_transforms,
                             collate_detection, detection_transforms, segmentation_transforms)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
