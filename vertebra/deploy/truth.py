"""Ground truth for overlays: a COCO-format annotation file, matched to the predicted images by file name.

The file is read and checked by :func:`vertebra.data._cocofile.load_coco`, the reader training uses,
so it is the same schema with the same errors (a :class:`~vertebra.errors.DataError` naming the file
and the record), raised before anything is written.  An image is matched to the record whose
``file_name`` equals its name in the run (its path relative to the folder given), else to the one
record with the same base name; an image with no record simply gets no ground truth drawn.

Ground truth is drawn by the annotation file's own category names, so it needs no mapping to the
model's classes (a class the model does not know is still shown).  It is not drawn, and the overlay
says why, where it would be misplaced: a record whose size differs from the image, or a file whose
EXIF orientation the predictor applied (COCO records are in the stored pixel frame).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data._cocofile import annotation_mask, load_coco, polygon_problem
from ..errors import DataError

__all__ = ["GT_COLOUR", "TruthObject", "ImageTruth", "GroundTruth"]

GT_COLOUR = (255, 0, 255)       # magenta: in no class palette, so a ground truth mark is never a class's
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class TruthObject:
    """One annotation: its category name, its box (XYXY, the record's pixels), and for semantic
    overlays its region (``None`` without a usable segmentation: the box is drawn instead)."""

    name: str
    box: tuple[float, float, float, float]
    crowd: bool = False
    mask: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ImageTruth:
    """The ground truth of one image; ``problem`` says why it is not drawn (then ``objects`` is empty)."""

    file_name: str
    objects: tuple[TruthObject, ...] = ()
    problem: str | None = None

    @property
    def names(self) -> list[str]:
        """The category names present, each once, in annotation order."""
        return list(dict.fromkeys(obj.name for obj in self.objects))


class GroundTruth:
    """An annotation file, indexed by file name.  ``masks``: rasterise each annotation's region
    (semantic overlays outline them).  ``drawn`` / ``not_drawn`` record what :meth:`lookup` found."""

    def __init__(self, path: str | os.PathLike[str], *, masks: bool = False):
        self.path = Path(path)
        try:
            self.coco = load_coco(self.path)
        except DataError as error:
            raise DataError(f"ground truth: {error}") from error
        self.masks = masks
        self.by_name = {record["file_name"]: record for record in self.coco.dataset["images"]}
        bases: dict[str, list[dict]] = {}
        for record in self.coco.dataset["images"]:
            bases.setdefault(Path(record["file_name"]).name, []).append(record)
        self.by_base = {base: records[0] for base, records in bases.items() if len(records) == 1}
        self.drawn: list[str] = []
        self.not_drawn: dict[str, str] = {}

    def record(self, name: str) -> dict | None:
        """The image record of the image named ``name`` in the run, or None."""
        return self.by_name.get(name) or self.by_base.get(Path(name).name)

    def lookup(self, name: str, size: tuple[int, int], path: Path | None = None) -> ImageTruth | None:
        """The ground truth of the image ``name`` of ``size`` (H, W), or None when it has no record."""
        record = self.record(name)
        if record is None:
            return None
        problem = _misplaced(record, size, path)
        if problem is not None:
            self.not_drawn[name] = problem
            return ImageTruth(record["file_name"], problem=problem)
        self.drawn.append(name)
        anns = sorted(self.coco.imgToAnns.get(record["id"], []), key=lambda ann: ann["id"])
        return ImageTruth(record["file_name"], tuple(self._object(ann, record) for ann in anns))

    def _object(self, ann: dict, record: dict) -> TruthObject:
        x, y, w, h = (float(v) for v in ann["bbox"])
        mask = None
        if self.masks and polygon_problem(ann.get("segmentation")) is None:
            mask = annotation_mask(self.coco, ann).astype(bool)
        return TruthObject(self.coco.cats[ann["category_id"]]["name"], (x, y, x + w, y + h),
                           bool(ann.get("iscrowd", 0)), mask)

    def report(self) -> dict:
        """For ``summary.json``: the file, the images it was drawn on, and those it was not (and why)."""
        return {"file": str(self.path), "drawn": len(self.drawn), "not_drawn": dict(self.not_drawn)}


def _misplaced(record: dict, size: tuple[int, int], path: Path | None) -> str | None:
    """Why ``record``'s annotations would land in the wrong place on the image, or None."""
    height, width = size
    if (record["height"], record["width"]) != (height, width):
        return (f"its record is {record['width']}x{record['height']}, the image {width}x{height}; "
                "fix the record's width and height")
    if path is not None:
        try:
            with Image.open(path) as handle:
                orientation = handle.getexif().get(_EXIF_ORIENTATION, 1)
        except (OSError, ValueError, SyntaxError):
            orientation = 1
        if orientation not in (1, None):
            return (f"the file has EXIF orientation {orientation}, which prediction applies but COCO "
                    "records do not (their pixels are the stored ones)")
    return None
