"""COCO detection and instance segmentation: ``(image, target)`` pairs the torchvision detection
models take, with labels remapped to ``1..K`` (0 is background).

COCO category ids are sparse (1..90 for 80 classes) while a detector's classification layer wants
contiguous indices, so categories sorted by id become labels ``1..K``; :attr:`CocoDetection.category_ids`
keeps the way back, which :class:`vertebra.metrics.CocoEvaluator` uses for scoring.

Degenerate boxes (width or height <= 0, non-finite, or entirely outside the image) are **skipped
with one counted warning** by default — real COCO files contain a few — or refused with a
:class:`~vertebra.errors.DataError` under ``strict=True``.  Crowd annotations (``iscrowd=1``)
are left out of the targets as torchvision's references do; ``COCOeval`` still uses them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import DataError
from ._cocofile import (PathLike, annotation_mask, category_labels, check_image_files, clipped_box,
                        empty_boxes, load_coco, polygon_problem, read_image)

__all__ = ["CocoDetection"]

Target = dict[str, Any]


class CocoDetection(Dataset):
    """A COCO instances file plus its image folder, as ``(image, target)`` samples.

    ``image`` is a uint8 ``tv_tensors.Image`` (3, H, W) until a transform converts it.  ``target``:

    - ``boxes``: ``tv_tensors.BoundingBoxes`` (N, 4), XYXY, float, clipped to the image;
    - ``labels``: int64 (N,), contiguous ``1..K``;
    - ``image_id``: int, the COCO image id (the key :class:`~vertebra.metrics.CocoEvaluator` wants);
    - ``masks``: ``tv_tensors.Mask`` (N, H, W) uint8, only with ``with_masks=True``.

    Args:
        image_dir: folder the records' ``file_name`` are relative to.
        ann_file: the ``instances_*.json``.
        transforms: called as ``transforms(image, target)`` (torchvision ``transforms.v2`` style),
            e.g. :func:`vertebra.data.detection_transforms`.
        with_masks: also rasterise each annotation's polygon / RLE into an instance mask.
        strict: refuse annotations with degenerate boxes (or, with masks, unusable polygons)
            instead of skipping them.

    Raises:
        DataError: malformed JSON, a missing image file, an annotation pointing at a missing image
            or category, a malformed record (a non-numeric or out-of-image polygon, an RLE that does
            not cover its image, a bad ``area`` / ``iscrowd``), an empty split, a degenerate box
            under ``strict``; at sample time, an image that cannot be decoded or whose size disagrees
            with its record.
    """

    def __init__(self, image_dir: PathLike, ann_file: PathLike,
                 transforms: Callable[..., Any] | None = None, *, with_masks: bool = False,
                 strict: bool = False):
        self.ann_file = str(ann_file)
        self.coco = load_coco(ann_file)
        self.image_dir = check_image_files(self.coco, image_dir, ann_file)
        self.transforms = transforms
        self.with_masks = with_masks
        self.ids: list[int] = sorted(self.coco.imgs)
        #: COCO category id of label ``i`` is ``category_ids[i - 1]``.
        self.category_ids: tuple[int, ...] = tuple(sorted(self.coco.cats))
        #: Names by label; index 0 is ``"__background__"``.
        self.category_id_to_label, self.classes = category_labels(self.coco, self.category_ids)
        self.label_to_category_id: dict[int, int] = {v: k for k, v in self.category_id_to_label.items()}
        self._annotations, self.skipped_annotations = self._usable_annotations(strict)

    @property
    def num_classes(self) -> int:
        """Number of labels *including* background (K + 1), what detection heads take as ``num_classes``."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, Target]:
        image_id = self.ids[index]
        record = self.coco.imgs[image_id]
        image = read_image(self.image_dir / record["file_name"], record, self.ann_file)
        target = self._target(image_id, record["height"], record["width"])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _target(self, image_id: int, height: int, width: int) -> Target:
        anns = self._annotations[image_id]
        if anns:
            boxes = tv_tensors.BoundingBoxes(torch.tensor([box for _, box in anns], dtype=torch.float32),
                                             format="XYXY", canvas_size=(height, width))
        else:
            boxes = empty_boxes(height, width)
        labels = torch.tensor([self.category_id_to_label[ann["category_id"]] for ann, _ in anns],
                              dtype=torch.int64)
        target: Target = {"boxes": boxes, "labels": labels, "image_id": image_id}
        if self.with_masks:
            masks = [torch.from_numpy(annotation_mask(self.coco, ann)) for ann, _ in anns]
            target["masks"] = tv_tensors.Mask(torch.stack(masks) if masks
                                              else torch.zeros((0, height, width), dtype=torch.uint8))
        return target

    def _usable_annotations(self, strict: bool) -> tuple[dict[int, list[tuple[dict, list[float]]]], list[int]]:
        """Per image, the non-crowd annotations with a usable box (and polygon); ids of those skipped."""
        usable: dict[int, list[tuple[dict, list[float]]]] = {image_id: [] for image_id in self.ids}
        skipped: list[tuple[int, str]] = []
        for ann in sorted(self.coco.anns.values(), key=lambda a: a["id"]):
            if ann.get("iscrowd", 0):
                continue
            record = self.coco.imgs[ann["image_id"]]
            box = clipped_box(ann["bbox"], record["width"], record["height"])
            problem = None if box is not None else f"degenerate bbox {ann['bbox']}"
            if problem is None and self.with_masks:
                problem = polygon_problem(ann.get("segmentation"))
            if problem is not None:
                skipped.append((ann["id"], problem))
                continue
            usable[ann["image_id"]].append((ann, box))
        if skipped:
            shown = "; ".join(f"annotation id {aid}: {why}" for aid, why in skipped[:5])
            more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
            if strict:
                raise DataError(f"{self.ann_file!r}: {len(skipped)} unusable annotation(s): {shown}{more}; "
                                f"fix or remove them, or pass strict=False to skip them")
            warnings.warn(f"{self.ann_file!r}: skipped {len(skipped)} unusable annotation(s): {shown}{more}",
                          stacklevel=3)
        return usable, [aid for aid, _ in skipped]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {len(self.classes) - 1} classes, "
                f"ann_file={self.ann_file!r}, with_masks={self.with_masks})")
