"""Checking one COCO annotation record against its image before pycocotools ever sees it.

pycocotools trusts its input in ways that cost more than a traceback: its polygon rasteriser
allocates in proportion to the coordinates (``1e7`` on a 32x32 image is 1.2 GB, ``1e30`` took a
machine down) and to the outline's length, and its RLE decoder writes as many pixels as the run
lengths add up to, whatever the image size.  Malformed values that do not crash it (a string
``area``, a polygon of strings) crash later instead: mid-epoch, or in ``COCOeval`` after it.
So every record is checked here once, when the file is loaded, and refused with a
:class:`~vertebra.errors.DataError` that names the file, the annotation and the image size.

What is *refused* here is what is malformed or hostile.  What is well-formed but unusable (a
degenerate box, a polygon with fewer than 3 points, no segmentation) is left to the data sets,
which skip it with a counted warning or refuse it under ``strict``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError

#: Polygon coordinates may lie this far past the border (labelling tools let a click land a little
#: outside the image; pycocotools drops what falls outside when it rasterises), as a fraction of
#: the side, plus one pixel.  Further out is a broken record, and a costly one.
BORDER_MARGIN = 0.05
#: An annotation's polygons together may trace at most this many times ``width + height`` pixels
#: (Chebyshev length, what the rasteriser allocates for).  A real outline is a few times the
#: object's size; a polygon zig-zagging across the image a million times is an attack.
OUTLINE_LAPS = 100
#: ... and never more than this many pixels (about 400 MB in the rasteriser), however large the image.
OUTLINE_CEILING = 4_000_000


def check_image(record: dict, where: str) -> None:
    """Refuse an image record (int ``width``/``height`` already checked) whose size is impossible.

    Non-positive sizes, and sizes Pillow will never decode (more than twice
    ``PIL.Image.MAX_IMAGE_PIXELS``, its decompression-bomb limit) or pycocotools' 32-bit RLEs cannot
    address: every mask of such a record would cost ``width * height`` bytes before the image
    itself failed to load.
    """
    width, height = record["width"], record["height"]
    name = f"{where}: image id {record['id']} ({record['file_name']!r})"
    if width <= 0 or height <= 0:
        raise DataError(f"{name} has size {width}x{height}; width and height must be positive")
    limit = 2**32 - 1 if Image.MAX_IMAGE_PIXELS is None else min(2 * Image.MAX_IMAGE_PIXELS, 2**32 - 1)
    if width * height > limit:
        raise DataError(f"{name} has size {_short(width)}x{_short(height)}, more than {limit} pixels, which no "
                        f"image can have here (2 x PIL.Image.MAX_IMAGE_PIXELS, Pillow's decompression-bomb "
                        f"limit; 2^32 for pycocotools' masks); fix the record, or raise "
                        f"PIL.Image.MAX_IMAGE_PIXELS if the image is real")


def check_annotation(ann: dict, image: dict, where: str) -> None:
    """Refuse ``ann`` (already known to have int ids pointing at ``image``) if it is malformed."""
    label = f"{where}: annotation id {ann['id']} (on image id {image['id']}, {image['width']}x{image['height']})"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise DataError(f"{where}: annotation id {ann['id']} has bbox {_short(bbox)}; COCO boxes are "
                        f"[x, y, width, height] (4 numbers)")
    area = ann.get("area", 0.0)
    if not _is_number(area) or not area >= 0 or not math.isfinite(area):
        raise DataError(f"{label}: area {_short(area)}; it must be a finite number >= 0 (the object's "
                        f"pixel count, which COCOeval sorts into small/medium/large), or left out")
    iscrowd = ann.get("iscrowd", 0)
    if type(iscrowd) is not int or iscrowd not in (0, 1):
        raise DataError(f"{label}: iscrowd {_short(iscrowd)}; it must be 0 (one object) or 1 "
                        f"(a crowd region), or left out")
    segmentation = ann.get("segmentation")
    if segmentation is None:
        return
    if isinstance(segmentation, list):
        _check_polygons(segmentation, image["width"], image["height"], label)
    elif isinstance(segmentation, dict):
        _check_rle(segmentation, image["width"], image["height"], label)
    else:
        raise DataError(f"{label}: segmentation must be a list of polygons [[x0, y0, x1, y1, ...], ...] or "
                        f"an RLE {{'counts': ..., 'size': [height, width]}}, got {type(segmentation).__name__}")


def _check_polygons(polygons: list, width: int, height: int, label: str) -> None:
    margins = (1.0 + BORDER_MARGIN * width, 1.0 + BORDER_MARGIN * height)
    longest_edge = max(width + 2 * margins[0], height + 2 * margins[1])
    bound = 0.0  # an upper bound on the outline, cheap to get
    for index, polygon in enumerate(polygons):
        if not isinstance(polygon, list):
            raise DataError(f"{label}: polygon {index} must be a list of numbers [x0, y0, x1, y1, ...], "
                            f"got {type(polygon).__name__}")
        if not _plainly_inside(polygon, width, height, margins):
            _refuse_coordinates(polygon, index, width, height, margins, label)
        bound += len(polygon) // 2 * longest_edge
    budget = min(OUTLINE_LAPS * (width + height), OUTLINE_CEILING)
    if bound <= budget:  # the common case: a few dozen points, no need to measure
        return
    outline = sum(_outline(polygon) for polygon in polygons)
    if outline > budget:
        raise DataError(f"{label}: its polygons trace an outline of {outline:.0f} px, more than {budget} px "
                        f"({OUTLINE_LAPS} times the image's width + height, at most {OUTLINE_CEILING}); a real "
                        f"outline is far shorter, so check the coordinates (rasterising it costs memory in "
                        f"proportion)")


def _plainly_inside(polygon: list, width: int, height: int, margins: tuple[float, float]) -> bool:
    """True when every value is a finite int/float within the margins (the fast path: a COCO file
    holds millions of coordinates, and numpy's per-call cost would dominate)."""
    if not set(map(type, polygon)) <= {int, float}:
        return False
    try:
        if not math.isfinite(sum(polygon)):  # any NaN or infinity makes the sum non-finite
            return False
    except OverflowError:  # an int past float range
        return False
    xs, ys = polygon[0::2], polygon[1::2]
    return ((not xs or (min(xs) >= -margins[0] and max(xs) <= width + margins[0]))
            and (not ys or (min(ys) >= -margins[1] and max(ys) <= height + margins[1])))


def _refuse_coordinates(polygon: list, index: int, width: int, height: int, margins: tuple[float, float],
                        label: str) -> None:
    """Raise the DataError that says which coordinate of ``polygon`` is wrong, and why."""
    flat = _coordinates(polygon, index, label)
    for axis, name, side in ((0, "x", width), (1, "y", height)):
        values, margin = flat[axis::2], margins[axis]
        outside = (values < -margin) | (values > side + margin)
        if outside.any():
            value = float(values[outside.argmax()])
            raise DataError(f"{label}: polygon {index} has {name} = {value:g}, outside the image (0..{side}, "
                            f"with a margin of {margin:g} px); polygon coordinates are pixels of this image")


def _outline(polygon: list) -> float:
    """Chebyshev length of the closed polygon: what pycocotools' rasteriser allocates for (x5)."""
    points = np.array(polygon[: len(polygon) // 2 * 2], dtype=np.float64).reshape(-1, 2)
    if len(points) < 2:
        return 0.0
    return float(np.abs(points - np.roll(points, 1, axis=0)).max(axis=1).sum())


def _check_rle(rle: dict, width: int, height: int, label: str) -> None:
    """``size`` is the image's, and the runs cover its pixels exactly (pycocotools writes as many
    pixels as they add up to, into a buffer of ``size``)."""
    if "counts" not in rle or "size" not in rle:
        raise DataError(f"{label}: an RLE needs 'counts' and 'size', got keys {sorted(map(str, rle))}")
    size, counts = rle["size"], rle["counts"]
    if not (isinstance(size, list) and [type(v) for v in size] == [int, int] and size == [height, width]):
        raise DataError(f"{label}: RLE size {_short(size)} is not the image's [height, width] = "
                        f"[{height}, {width}]; an RLE must be encoded at the size of its image")
    if isinstance(counts, str):
        try:
            runs = compressed_runs(counts)
        except ValueError as error:
            raise DataError(f"{label}: RLE counts is not a valid compressed RLE string ({error}); "
                            f"encode masks with pycocotools.mask.encode") from None
    elif isinstance(counts, list):
        bad = [v for v in counts if type(v) is not int or v < 0]
        if bad:
            raise DataError(f"{label}: RLE run lengths must be non-negative integers, got {_short(bad[0])}")
        runs = counts
    else:
        raise DataError(f"{label}: RLE counts must be a list of run lengths or a compressed string, "
                        f"got {type(counts).__name__}")
    total = sum(runs)
    if total != height * width:
        raise DataError(f"{label}: RLE runs add up to {_short(total)} pixels, but the image has "
                        f"{height}x{width} = {height * width}; the runs must cover every pixel once")


def compressed_runs(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string, as pycocotools' ``rleFrString`` reads them.

    Done here rather than by pycocotools because its C reader trusts the string: a character
    outside ``'0'..'o'``, an unfinished run or runs past the image lead it to read or write past
    its buffers.  Each run is 5-bit groups, low first, ``0x20`` = more follow, ``0x10`` in the
    last = negative; from the third run on, each is a difference to the run two before.
    """
    runs: list[int] = []
    value = groups = 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise ValueError(f"character {char!r} outside '0'..'o'")
        value |= (code & 0x1F) << (5 * groups)
        groups += 1
        if code & 0x20:
            if groups == 7:  # 35 bits: past any 32-bit run (difference)
                raise ValueError("a run of more than 32 bits")
            continue
        if code & 0x10:
            value |= -1 << (5 * groups)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"run {len(runs)} is negative")
        runs.append(value)
        value = groups = 0
    if groups:
        raise ValueError("it ends in the middle of a run")
    return runs


def _coordinates(polygon: list, index: int, label: str) -> np.ndarray:
    """The polygon's coordinates as a float array, refusing anything but finite numbers."""
    for value in polygon:
        if type(value) is not float and type(value) is not int:
            raise DataError(f"{label}: polygon {index} coordinate {_short(value)} is not a number; polygons are "
                            f"flat lists of pixel coordinates [x0, y0, x1, y1, ...]")
    try:
        array = np.array(polygon, dtype=np.float64)
    except OverflowError:  # an int past float range
        array = np.array([math.inf])
    if not np.isfinite(array).all():
        value = next(v for v in polygon if not _finite(v))
        raise DataError(f"{label}: polygon {index} coordinate {_short(value)} is not a finite pixel coordinate")
    return array


def _is_number(value: Any) -> bool:
    """An int or float (not a bool) that a float can hold; NaN and infinities count."""
    if type(value) is float:
        return True
    if type(value) is not int:
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
