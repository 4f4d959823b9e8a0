"""A built-in COCO-format data set of coloured shapes, so every command works with no download.

``generate_shapes(out)`` writes a real COCO instances data set (the layout and JSON of
``train2017/`` + ``annotations/instances_train2017.json``, on a small scale)::

    out/train/000001.jpg ...            out/annotations/instances_train.json
    out/val/000001.jpg ...              out/annotations/instances_val.json

Each image is a textured background (smooth value noise, stripes or a checkerboard in muted
colours, plus pixel noise) with 1-4 saturated shapes drawn on it.  Shapes never overlap, so the
polygon of every annotation is exactly its visible region and the instance masks are exact.

Determinism: every image has its own random stream seeded by ``(seed, split, index)``, so the
same seed gives byte-identical JSON and images, and image *k* does not change when
``num_train`` grows.  Only numpy, Pillow and pycocotools are used (no torch): the quickstart
calls this on every run, and 100 images at 128 px take well under a second.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from ..errors import ConfigError

__all__ = ["generate_shapes", "ShapesPaths", "SHAPE_CATEGORIES"]

# (COCO category id, name, number of polygon vertices).  Ids start at 1 like COCO's.
_CATEGORY_ROWS = (
    (1, "circle", 32),
    (2, "square", 4),
    (3, "triangle", 3),
)
SHAPE_CATEGORIES: tuple[str, ...] = tuple(name for _, name, _ in _CATEGORY_ROWS)

_SPLIT_CODES = {"train": 0, "val": 1}  # part of each image's seed, so the splits never share images
_MAX_SHAPES = 4
_RADIUS_RANGE = (0.09, 0.22)  # circumscribed radius, as a fraction of the image size
_PLACEMENT_TRIES = 40
_JPEG_QUALITY = 92


@dataclass(frozen=True)
class ShapesPaths:
    """Where :func:`generate_shapes` wrote each split: hand these to :class:`CocoDetection`."""

    root: Path
    train_images: Path
    train_annotations: Path
    val_images: Path
    val_annotations: Path
    categories: tuple[str, ...] = SHAPE_CATEGORIES


def generate_shapes(out_dir: str | os.PathLike[str], *, num_train: int = 64, num_val: int = 16,
                    image_size: int = 128, seed: int = 0) -> ShapesPaths:
    """Write the shapes data set under ``out_dir`` and return its paths.

    Args:
        out_dir: created if missing; files of an earlier run with the same names are overwritten.
        num_train, num_val: number of images per split (at least 1 each: an empty split would
            only fail later, inside training or evaluation).
        image_size: side of the square images in pixels (at least 32).
        seed: any non-negative integer; the same seed gives byte-identical files.

    Raises:
        ConfigError: a count, size or seed out of range.
    """
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1),
                             ("image_size", image_size, 32), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"generate_shapes: {name} must be an integer >= {low}, got {value!r}")
    root = Path(out_dir)
    paths = ShapesPaths(root=root, train_images=root / "train",
                        train_annotations=root / "annotations" / "instances_train.json",
                        val_images=root / "val",
                        val_annotations=root / "annotations" / "instances_val.json")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count, image_dir, ann_file in (
            ("train", num_train, paths.train_images, paths.train_annotations),
            ("val", num_val, paths.val_images, paths.val_annotations)):
        image_dir.mkdir(parents=True, exist_ok=True)
        dataset = _write_split(split, count, image_dir, image_size, seed)
        ann_file.write_text(json.dumps(dataset, separators=(",", ":")) + "\n", encoding="utf-8")
    return paths


def _write_split(split: str, count: int, image_dir: Path, size: int, seed: int) -> dict:
    """Render ``count`` images into ``image_dir``; return the COCO dict that describes them."""
    images, annotations = [], []
    for index in range(1, count + 1):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
        file_name = f"{index:06d}.jpg"
        canvas = Image.fromarray(_background(rng, size))
        draw = ImageDraw.Draw(canvas)
        for category_id, polygon, colour in _place_shapes(rng, size):
            draw.polygon([tuple(point) for point in polygon], fill=colour)
            annotations.append(_annotation(len(annotations) + 1, index, category_id, polygon, size))
        canvas.save(image_dir / file_name, quality=_JPEG_QUALITY)
        images.append({"id": index, "file_name": file_name, "width": size, "height": size})
    return {
        "info": {"description": f"vertebra shapes ({split} split)", "version": "1.0",
                 "seed": seed, "image_size": size},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"}
                       for cid, name, _ in _CATEGORY_ROWS],
    }


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour texture (value noise, stripes or checkerboard) plus pixel noise."""
    kind = rng.integers(3)
    if kind == 0:  # smooth value noise: a coarse random grid upsampled bilinearly
        grid = rng.integers(0, 256, size=(int(rng.integers(3, 9)),) * 2, dtype=np.uint8)
        field = np.asarray(Image.fromarray(grid).resize((size, size), Image.BILINEAR), np.float32) / 255
    else:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        period = size / rng.uniform(3, 10)
        along = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        if kind == 1:  # soft stripes
            field = 0.5 + 0.5 * np.sin(2 * math.pi * along)
        else:  # rotated checkerboard
            across = (-xs * math.sin(angle) + ys * math.cos(angle)) / period
            field = ((np.floor(along) + np.floor(across)) % 2).astype(np.float32)
    low, high = (_muted_colour(rng) for _ in range(2))
    image = low + (high - low) * field[..., None]
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour, so saturated shapes stand out from any background."""
    hue, sat, val = rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32) * 255


def _place_shapes(rng: np.random.Generator, size: int):
    """Yield ``(category_id, polygon (V, 2), rgb)`` for 1-4 shapes whose bounding circles don't touch."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, _MAX_SHAPES + 1))):
        category_id, _, vertices = _CATEGORY_ROWS[int(rng.integers(len(_CATEGORY_ROWS)))]
        for _ in range(_PLACEMENT_TRIES):
            radius = rng.uniform(*_RADIUS_RANGE) * size
            cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:  # the image is full; fewer shapes is fine
            continue
        placed.append((cx, cy, radius))
        start = rng.uniform(0, 2 * math.pi)
        # math.cos/sin (libm) rather than numpy's SIMD kernels, so the JSON does not depend on the CPU
        cx, cy, radius, start = float(cx), float(cy), float(radius), float(start)
        angles = [start + k * 2 * math.pi / vertices for k in range(vertices)]
        polygon = np.array([[round(cx + radius * math.cos(a), 2), round(cy + radius * math.sin(a), 2)] for a in angles])
        hue, sat, val = rng.uniform(0, 1), rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0)
        colour = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        yield category_id, polygon, colour


def _annotation(ann_id: int, image_id: int, category_id: int, polygon: np.ndarray, size: int) -> dict:
    """One COCO instance record: polygon segmentation, xywh bbox of the polygon, mask area."""
    flat = [float(v) for v in polygon.reshape(-1)]
    x0, y0 = polygon.min(0)
    x1, y1 = polygon.max(0)
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], size, size))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": [flat],
        "area": float(mask_utils.area(rle)),
        "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }
