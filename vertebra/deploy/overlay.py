"""Overlays: a prediction drawn on its image so a person can check it at a glance.

Each overlay is the image (enlarged when small, so labels stay legible), a header line stating the
score threshold and what was found, and a legend beside the image (class -> colour) that never
covers the pixels.  Detection labels (``name score``) are placed greedily, best score first, at the
first of a few spots around their box that stays inside the image and clears every label already
placed; a label with no free spot is left out rather than printed over another (its box is still
drawn, in its class colour, and the header counts the hidden labels).  Pillow only.

Ground truth (:mod:`.truth`), where given, is drawn in one fixed colour that no class has
(:data:`~.truth.GT_COLOUR`, backed by black so it shows on an object of that colour too), with the
annotation file's category names: detection and instance as dashed boxes labelled ``GT name``
(placed with the predictions' labels, so neither overprints the other), semantic as the outline of
each annotated region (the predicted fill stays visible inside it, so the two compare edge to edge
on one image, at the overlay's size, where a side-by-side panel would halve the scale of each),
classification as ``true: name`` in the header.  The legend has one entry saying which marks are
the ground truth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .truth import GT_COLOUR

if TYPE_CHECKING:  # pragma: no cover
    from .predict import Prediction, Predictor
    from .truth import ImageTruth

__all__ = ["palette", "label_name", "draw_overlay", "place_labels"]

# distinct, readable colours (Tableau 20's dark row, then its light row)
_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232),
            (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
            (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229))
MIN_SIDE = 384          # overlays of smaller images are enlarged to this shorter side
MASK_ALPHA = 0.45
UNSEEN = 255            # the semantic mask value of pixels the model did not see
_GAP = (0, 0, 0)        # what backs a ground truth mark, so it shows on a background of its own colour

Box = tuple[float, float, float, float]


def palette(count: int) -> list[tuple[int, int, int]]:
    """Colour of class ``i`` for ``i < count``: black for class 0 (background), then the table, cycled."""
    return [(0, 0, 0)] + [_COLOURS[(index - 1) % len(_COLOURS)] for index in range(1, count)]


def label_name(names: tuple[str, ...], index: int) -> str:
    """The class name of output ``index``; its number for a model with more outputs than named classes."""
    return names[index] if 0 <= index < len(names) else str(index)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):   # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: list[Box], sizes: list[tuple[float, float]], width: float,
                 height: float) -> list[tuple[float, float] | None]:
    """Top-left corner for each label (in the given order), or None where no spot is free.

    Candidates: above the box, inside its top, below it, inside its bottom, each first at the left
    edge then at the right; the first inside the image that overlaps no label placed before wins.
    """
    placed: list[Box] = []
    spots: list[tuple[float, float] | None] = []
    for (x0, y0, x1, y1), (w, h) in zip(boxes, sizes):
        chosen = None
        rows = (y0 - h, y0, y1, y1 - h)
        for x, y in [(x, y) for y in rows for x in (x0, x1 - w)]:
            x = min(max(x, 0.0), max(width - w, 0.0))
            rect = (x, y, x + w, y + h)
            if y >= 0 and y + h <= height and not any(_overlaps(rect, other) for other in placed):
                chosen = (x, y)
                placed.append(rect)
                break
        spots.append(chosen)
    return spots


def draw_overlay(prediction: "Prediction", predictor: "Predictor", truth: "ImageTruth | None" = None) -> Image.Image:
    """The overlay of one prediction (its ``image`` must have been kept), with ``truth`` drawn if given."""
    image = Image.fromarray(prediction.image.permute(1, 2, 0).numpy())
    height, width = prediction.size
    scale = max(1.0, MIN_SIDE / min(height, width))
    if scale > 1:
        image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
    font = _font(max(12, round(min(image.size) / 30)))
    colours = palette(len(predictor.class_names))
    draw_task = _DRAW[predictor.task]
    image, header, legend = draw_task(image, prediction, predictor, scale, font, colours, truth)
    if truth is not None and truth.problem is not None:
        header += f"  |  ground truth not drawn: {truth.problem}"
    return _compose(image, header, legend, font)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int], width: int) -> None:
    """A rectangle outline of ``colour`` dashes (``3 * width`` long) alternating with black ones, so it
    shows on any background (Pillow draws only solid outlines)."""
    x0, y0, x1, y1 = box
    dash = 3 * width
    draw.rectangle(box, outline=_GAP, width=width)
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False),
                                    (y0, y1, x1, False)):
        start = a
        while start < b:
            end = min(start + dash, b)
            draw.line((start, fixed, end, fixed) if horizontal else (fixed, start, fixed, end),
                      fill=colour, width=width)
            start += 2 * dash


def _labels(image: Image.Image, font, marks: list[tuple[Box, str, tuple[int, int, int]]]) -> int:
    """Draw each mark's label (box, text, colour; in priority order) where it clears the others;
    returns how many found no free spot."""
    draw = ImageDraw.Draw(image)
    sizes = [_text_size(draw, text, font) for _, text, _ in marks]
    spots = place_labels([box for box, _, _ in marks], sizes, *image.size)
    for (_, text, colour), spot, size in zip(marks, spots, sizes):
        if spot is not None:
            draw.rectangle((spot[0], spot[1], spot[0] + size[0], spot[1] + size[1]), fill=colour)
            draw.text((spot[0] + 2, spot[1] + 1), text, fill=_text_colour(colour), font=font)
    return sum(spot is None for spot in spots)


def _truth_marks(truth: "ImageTruth | None", scale: float) -> list[tuple[Box, str, tuple[int, int, int]]]:
    if truth is None:
        return []
    return [(tuple(v * scale for v in obj.box), f"GT {obj.name}" + (" (crowd)" if obj.crowd else ""), GT_COLOUR)
            for obj in truth.objects]


def _truth_legend(truth: "ImageTruth | None", marks: str) -> list[tuple[str, tuple[int, int, int]]]:
    if truth is None or truth.problem is not None:
        return []
    count = len(truth.objects)
    return [(f"ground truth ({marks}): {count} object{'s' * (count != 1)}", GT_COLOUR)]


def _blend(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    """``image`` with ``colour`` blended in where ``mask`` (at ``image``'s size) is true."""
    pixels = np.asarray(image).astype(np.float32)
    pixels[mask] = pixels[mask] * (1 - MASK_ALPHA) + np.asarray(colour, np.float32) * MASK_ALPHA
    return Image.fromarray(pixels.round().astype(np.uint8))


def _resized_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[::-1] == size:
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(size, Image.Resampling.NEAREST))


def _detections(image, prediction, predictor, scale, font, colours, truth):
    output, names = prediction.output, predictor.class_names
    order = output["scores"].argsort(descending=True).tolist()
    if "masks" in output:
        for index in reversed(order):      # best last, so it is on top
            mask = _resized_mask(output["masks"][index].numpy(), image.size).astype(bool)
            image = _blend(image, mask, colours[int(output["labels"][index]) % len(colours)])
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 200))
    marks, classes = [], []
    for index in order:
        label = int(output["labels"][index])
        box = tuple(float(v) * scale for v in output["boxes"][index].tolist())
        colour = colours[label % len(colours)]
        draw.rectangle(box, outline=colour, width=line)
        marks.append((box, f"{label_name(names, label)} {float(output['scores'][index]):.2f}", colour))
        classes.append(label)
    truth_marks = _truth_marks(truth, scale)
    for box, _, colour in truth_marks:
        _dashed_rectangle(draw, box, colour, line)
    hidden = _labels(image, font, marks + truth_marks)
    header = (f"threshold {predictor.threshold:.2f}  |  {len(order)} detection{'s' * (len(order) != 1)}"
              + (f"  ({hidden} label{'s' * (hidden != 1)} hidden: no free space)" if hidden else ""))
    present = sorted(set(classes))
    legend = [(label_name(names, c), colours[c % len(colours)]) for c in present]
    return image, header, legend + _truth_legend(truth, "dashed")


def _semantic(image, prediction, predictor, scale, font, colours, truth):
    mask = _resized_mask(prediction.output["mask"].numpy(), image.size)
    names = predictor.class_names
    present = [int(c) for c in np.unique(mask) if c != 0 and c < len(names)]
    for index in present:
        image = _blend(image, mask == index, colours[index])
    total = mask.size
    legend = [(f"{names[c]} {100 * float((mask == c).sum()) / total:.1f}%", colours[c]) for c in present]
    if (mask == UNSEEN).any():      # cut away by a centre crop: the model has no answer there
        image = _blend(image, mask == UNSEEN, (255, 255, 255))
        legend.append((f"not seen (crop) {100 * float((mask == UNSEEN).sum()) / total:.1f}%", (255, 255, 255)))
    header = "each pixel: its most likely class (no threshold)  |  " + (
        f"{len(present)} class{'es' * (len(present) != 1)} besides {names[0]}" if present else f"only {names[0]}")
    if truth is not None:
        image = _outline_truth(image, truth, scale)
        _labels(image, font, _truth_marks(truth, scale))
    return image, header, legend + _truth_legend(truth, "outlined")


def _outline_truth(image: Image.Image, truth: "ImageTruth", scale: float) -> Image.Image:
    """Each annotated region's outline (its box, dashed, where it has no usable segmentation)."""
    line = max(2, round(min(image.size) / 200))
    pixels = np.asarray(image).copy()
    for obj in truth.objects:
        if obj.mask is None:
            continue
        region = _resized_mask(obj.mask, image.size).astype(bool)
        inner, core = (_eroded(region, size) for size in (line, line + max(1, line // 2)))
        pixels[region & ~inner] = GT_COLOUR                 # the outer ring, and a black one inside it
        pixels[inner & ~core] = _GAP
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for obj in truth.objects:
        if obj.mask is None:
            _dashed_rectangle(draw, tuple(v * scale for v in obj.box), GT_COLOUR, line)
    return image


def _eroded(region: np.ndarray, by: int) -> np.ndarray:
    """``region`` shrunk by ``by`` pixels on every side."""
    return np.asarray(Image.fromarray(region.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * by + 1))) > 0


def _classification(image, prediction, predictor, scale, font, colours, truth):
    names = predictor.class_names
    labels, scores = prediction.output["labels"].tolist(), prediction.output["scores"].tolist()
    legend = [(f"{rank + 1}. {label_name(names, label)} {score:.2f}", _COLOURS[rank % len(_COLOURS)])
              for rank, (label, score) in enumerate(zip(labels, scores))]
    best = f"{label_name(names, labels[0])} ({scores[0]:.2f})" if labels else "no class above the threshold"
    header = f"threshold {predictor.threshold:.2f}  |  top-{predictor.top_k}: {best}"
    if truth is not None and truth.problem is None:
        true = ", ".join(truth.names) or "no annotation"
        header += f"  |  true: {true}"
        legend.append((f"ground truth: {true}", GT_COLOUR))
    return image, header, legend


_DRAW = {"detection": _detections, "instance": _detections, "semantic": _semantic,
         "classification": _classification}


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[float, float]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left + 4, bottom - top + 4


def _compose(image: Image.Image, header: str, legend: list[tuple[str, tuple[int, int, int]]], font) -> Image.Image:
    """The image under a header line, with the legend in a column to its right."""
    probe = ImageDraw.Draw(image)
    row = _text_size(probe, "Ag", font)[1] + 4
    swatch = row - 6
    legend_width = (max((_text_size(probe, text, font)[0] for text, _ in legend), default=0) + swatch + 24
                    if legend else 0)
    width = max(image.width + legend_width, _text_size(probe, header, font)[0] + 12)
    height = row + max(image.height, len(legend) * row + 8)
    canvas = Image.new("RGB", (int(width), int(height)), (255, 255, 255))
    canvas.paste(image, (0, row))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 2), header, fill=(0, 0, 0), font=font)
    for index, (text, colour) in enumerate(legend):
        x, y = image.width + 8, row + 4 + index * row
        draw.rectangle((x, y + 2, x + swatch, y + 2 + swatch), fill=colour, outline=(0, 0, 0))
        draw.text((x + swatch + 6, y), text, fill=(0, 0, 0), font=font)
    return canvas
