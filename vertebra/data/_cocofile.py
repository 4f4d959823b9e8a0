"""Reading a COCO ``instances_*.json`` and its images, turning every way it can be broken into a
:class:`~vertebra.errors.DataError` that names the file and the record.

pycocotools trusts its input: a typo'd ``image_id`` surfaces as a ``KeyError`` three calls deep, a
truncated file as a bare ``JSONDecodeError`` with no file name, a hostile polygon as gigabytes of
memory.  Everything is checked once here (each record's values in :mod:`._records`), before
training starts, so a bad data set fails in the first second with a message that says which
record to fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from pathlib import Path, PurePath
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torchvision import tv_tensors

from ..errors import DataError
from ._records import check_annotation, check_image

PathLike = str | os.PathLike[str]


def load_coco(ann_file: PathLike) -> COCO:
    """Parse and validate ``ann_file``; return an indexed pycocotools ``COCO`` (printing nothing).

    Checked: the file exists and is JSON; ``images`` and ``categories`` are non-empty lists of
    records with the required fields; ids are unique; every annotation points at an existing
    image and category and passes :func:`._records.check_annotation`
    (a 4-number ``bbox``, a finite ``area`` >= 0, ``iscrowd`` 0/1, polygon
    coordinates within the image, RLEs that cover it exactly).  Degenerate boxes are *not* refused here:
    the data sets decide (skip or ``strict``).
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"annotation file {str(path)!r} does not exist; pass the path of an "
                        f"instances_*.json (e.g. generate one with `vertebra data shapes --out DIR`)")
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"annotation file {str(path)!r} is not valid JSON: {error.msg} at line "
                        f"{error.lineno}, column {error.colno}") from error
    except RecursionError:
        raise DataError(f"annotation file {str(path)!r} is nested too deeply to be a COCO file "
                        f"(lists or objects inside each other thousands of levels down)") from None
    except UnicodeDecodeError as error:
        raise DataError(f"annotation file {str(path)!r} is not UTF-8 text ({error.reason})") from error
    _validate(dataset, path)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def _validate(dataset: Any, path: Path) -> None:
    where = f"annotation file {str(path)!r}"
    if not isinstance(dataset, dict):
        raise DataError(f"{where}: the top level must be a JSON object with 'images', 'annotations' "
                        f"and 'categories', got {type(dataset).__name__}")
    for key in ("images", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"{where}: missing or invalid {key!r} list; a COCO instances file needs "
                            f"'images', 'annotations' and 'categories'")
    dataset.setdefault("annotations", [])
    if not isinstance(dataset["annotations"], list):
        raise DataError(f"{where}: 'annotations' must be a list")
    if not dataset["images"]:
        raise DataError(f"{where}: the split is empty (no images); check that the file is the one "
                        f"you meant and that it was written completely")
    if not dataset["categories"]:
        raise DataError(f"{where}: 'categories' is empty; at least one category is needed")

    _check_records(dataset["images"], "images", where, {"id": int, "file_name": str, "width": int, "height": int})
    images = {record["id"]: record for record in dataset["images"]}
    for record in dataset["images"]:
        check_image(record, where)
    category_ids = _check_records(dataset["categories"], "categories", where, {"id": int, "name": str})
    _check_records(dataset["annotations"], "annotations", where,
                   {"id": int, "image_id": int, "category_id": int})
    for ann in dataset["annotations"]:
        if ann["image_id"] not in images:
            raise DataError(f"{where}: annotation id {ann['id']} points at image id {ann['image_id']}, "
                            f"which is not in 'images'; remove the annotation or add the image record")
        if ann["category_id"] not in category_ids:
            raise DataError(f"{where}: annotation id {ann['id']} has category_id {ann['category_id']}, "
                            f"which is not in 'categories' (ids {sorted(category_ids)})")
        check_annotation(ann, images[ann["image_id"]], where)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:  # COCOeval's area ranges need it
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])


def _check_records(records: list, key: str, where: str, fields: dict[str, type]) -> set[int]:
    """Every record is an object with ``fields`` of the right types; returns the set of unique ids."""
    ids: set[int] = set()
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{where}: {key}[{position}] must be an object, got {type(record).__name__}")
        for field, kind in fields.items():
            value = record.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                label = f"{key}[{position}]" + (f" (id {record['id']})" if "id" in record else "")
                raise DataError(f"{where}: {label} needs {field!r} of type {kind.__name__}, got {value!r}")
        if record["id"] in ids:
            raise DataError(f"{where}: duplicate id {record['id']} in {key!r}; ids must be unique")
        ids.add(record["id"])
    return ids


def check_image_files(coco: COCO, image_dir: PathLike, ann_file: PathLike) -> Path:
    """Every image record's file exists under ``image_dir``; returns ``image_dir`` as a Path."""
    directory = Path(image_dir)
    if not directory.is_dir():
        raise DataError(f"image folder {str(directory)!r} does not exist (annotations: {str(ann_file)!r})")
    for image_id in sorted(coco.imgs):
        record = coco.imgs[image_id]
        name = PurePath(record["file_name"])
        if name.is_absolute() or ".." in name.parts:  # the data set stays inside its image folder
            raise DataError(f"image id {image_id} of {str(ann_file)!r} names file {record['file_name']!r}, "
                            f"which is outside the image folder; file_name must be a path relative to "
                            f"{str(directory)!r} without '..' (a subfolder such as 'train/0001.jpg' is fine)")
        if not (directory / name).is_file():
            raise DataError(f"image id {image_id} of {str(ann_file)!r} names file {record['file_name']!r}, "
                            f"which is missing from {str(directory)!r}")
    return directory


def decode_rgb(path: Path, context: str) -> tv_tensors.Image:
    """Decode any image file Pillow reads as a uint8 RGB ``tv_tensors.Image`` (3, H, W).

    Pillow rather than ``torchvision.io``: torchvision 0.29 deprecated its decoders, and Pillow
    also reads BMP/TIFF.  ``context`` names the record in the error message.  EXIF orientation is
    not applied, as in torchvision's and pycocotools' readers: COCO records and their boxes are
    in the stored pixels' frame.
    """
    try:
        with Image.open(path) as handle:
            array = rgb_array(handle)
    except (OSError, ValueError, Image.DecompressionBombError) as error:  # UnidentifiedImageError is an OSError
        raise DataError(f"image file {str(path)!r} ({context}) cannot be decoded: "
                        f"{str(error).strip() or type(error).__name__}; replace or remove the file") from error
    return tv_tensors.Image(torch.from_numpy(array.copy()).permute(2, 0, 1))


def rgb_array(handle: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of an open image; shared by training's and prediction's decoders.  16-bit greyscale (modes ``I;16*``, and ``I`` read as 16-bit) keeps its high
    byte, as Pillow itself does for 16-bit RGB; ``convert("RGB")`` would clip it at 255 instead."""
    if handle.mode == "I" or handle.mode.startswith("I;16"):
        grey = (np.clip(np.asarray(handle), 0, 65535).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(handle.convert("RGB"))  # convert() forces the full decode


def read_image(path: Path, record: dict, ann_file: PathLike) -> tv_tensors.Image:
    """Decode a COCO image record's file; it must have the size its record says."""
    image = decode_rgb(path, f"image id {record['id']} of {str(ann_file)!r}")
    height, width = image.shape[-2:]
    if (height, width) != (record["height"], record["width"]):
        raise DataError(f"image file {str(path)!r} is {width}x{height} but image id {record['id']} of "
                        f"{str(ann_file)!r} says {record['width']}x{record['height']}; fix the record")
    return image


def clipped_box(bbox: list[float], width: int, height: int) -> list[float] | None:
    """COCO ``[x, y, w, h]`` -> XYXY clipped to the image, or ``None`` if nothing of it is left."""
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        return None
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1, y1]


def polygon_problem(segmentation: Any) -> str | None:
    """Why a segmentation cannot be rasterised, or ``None`` when it can."""
    if isinstance(segmentation, dict):  # an RLE, compressed or not: load_coco checked it
        return None
    if not isinstance(segmentation, list) or not segmentation:
        return "no segmentation"
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return "a polygon with fewer than 3 points"
    return None


def annotation_mask(coco: COCO, ann: dict) -> np.ndarray:
    """``coco.annToMask(ann)`` (H, W) uint8, without pycocotools' numpy-2 DeprecationWarning.

    pycocotools 2.0.x builds its decoded array through an ``__array__`` that lacks numpy 2's
    ``copy`` keyword, which warns on every call; the result is correct, the warning is noise.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return coco.annToMask(ann)


def empty_boxes(height: int, width: int) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(torch.zeros((0, 4)), format="XYXY", canvas_size=(height, width))


def category_labels(coco: Any, category_ids: Sequence[int]) -> tuple[dict[int, int], tuple[str, ...]]:
    """Labels ``1..K`` for ``category_ids`` in order (0 is background), and the class names by label."""
    id_to_label = {cid: i + 1 for i, cid in enumerate(category_ids)}
    return id_to_label, ("__background__",) + tuple(coco.cats[cid]["name"] for cid in category_ids)
