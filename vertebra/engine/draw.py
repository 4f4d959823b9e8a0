"""Predictions drawn on validation images, for the ``predictions.png`` a run leaves behind.

Images are upscaled (nearest neighbour) to at least :data:`MIN_SIDE` pixels so label text stays
legible on small data sets like the 128 px shapes.  Detection: ground-truth boxes thin and white,
predictions in a colour per class with name and score.  Semantic: input | ground truth |
prediction, classes as solid colours on black.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["to_uint8", "detection_panel", "semantic_panel", "classification_panel", "PALETTE", "MIN_SIDE"]

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
MIN_SIDE = 256
SCORE_THRESHOLD = 0.5


def colour(label: int) -> tuple[int, int, int]:
    return PALETTE[label % len(PALETTE)]


def _font() -> dict:
    """A readable TrueType font (matplotlib's DejaVu Sans, already needed for the curves) if present."""
    try:
        import os

        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        return {"font": path, "font_size": 13} if os.path.exists(path) else {}
    except ImportError:
        return {}


def to_uint8(image: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """A float image in [0, 1] (or normalised with ``mean``/``std``) as uint8 (3, H, W) on the CPU."""
    image = image.detach().float().cpu()
    if mean is not None and std is not None:
        image = image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _scale(image: Tensor) -> int:
    return max(1, -(-MIN_SIDE // min(image.shape[-2:])))


def _upscale(image: Tensor, factor: int) -> Tensor:
    if factor == 1:
        return image
    return F.interpolate(image[None].float(), scale_factor=factor, mode="nearest")[0].to(image.dtype)


def _upscale_masks(masks: Tensor, factor: int) -> Tensor:
    if factor == 1 or masks.numel() == 0:
        return masks.bool() if masks.numel() == 0 else masks
    return F.interpolate(masks[None].float(), scale_factor=factor, mode="nearest")[0] > 0.5


def detection_panel(image: Tensor, output: dict, target: dict, class_names: Sequence[str],
                    masks: bool = False) -> Tensor:
    """Ground-truth boxes (thin, white) and predictions scoring > 0.5 (class colour, name and score)."""
    factor = _scale(image)
    canvas = _upscale(image, factor)
    keep = output["scores"].detach().cpu() > SCORE_THRESHOLD
    labels = output["labels"].detach().cpu()[keep].tolist()
    colours = [colour(label) for label in labels]
    if masks and labels:
        predicted = output["masks"].detach().cpu()[keep][:, 0] > 0.5
        canvas = draw_segmentation_masks(canvas, _upscale_masks(predicted, factor), alpha=0.4, colors=colours)
    truth = target["boxes"].as_subclass(Tensor).detach().cpu().float()
    if len(truth):
        canvas = draw_bounding_boxes(canvas, truth * factor, colors="white", width=1)
    if labels:
        scores = output["scores"].detach().cpu()[keep].tolist()
        names = [f"{class_names[label]} {score:.2f}" for label, score in zip(labels, scores)]
        canvas = draw_bounding_boxes(canvas, output["boxes"].detach().cpu()[keep].float() * factor, labels=names,
                                     colors=colours, width=2, label_colors="black", fill_labels=True, **_font())
    return canvas


def _label_colours(label_map: Tensor) -> Tensor:
    """Class indices -> uint8 RGB: black background, a palette colour per class, white for ignore (255)."""
    table = torch.tensor([(0, 0, 0)] + [colour(c) for c in range(1, 256)], dtype=torch.uint8)
    table[255] = torch.tensor((255, 255, 255), dtype=torch.uint8)
    return table[label_map.long().clamp(0, 255)].permute(2, 0, 1)


def semantic_panel(image: Tensor, predicted: Tensor, target: Tensor) -> Tensor:
    """Three images side by side: the input, the ground-truth classes, the predicted classes."""
    factor = _scale(image)
    up = lambda labels: _upscale(labels[None].to(torch.uint8), factor)[0]  # noqa: E731
    panels = [_upscale(image, factor), _label_colours(up(target.as_subclass(Tensor).cpu())),
              _label_colours(up(predicted.cpu()))]
    gap = torch.full((3, panels[0].shape[1], 4), 255, dtype=torch.uint8)
    return torch.cat([panels[0], gap, panels[1], gap, panels[2]], dim=2)


def classification_panel(image: Tensor, predicted: int, label: int, class_names: Sequence[str]) -> Tensor:
    """The predicted class on a green frame (right) or red frame with the true class (wrong)."""
    factor = _scale(image)
    canvas = _upscale(image, factor)
    height, width = canvas.shape[-2:]
    right = predicted == label
    text = class_names[predicted] + ("" if right else f" (true: {class_names[label]})")
    return draw_bounding_boxes(canvas, torch.tensor([[1, 1, width - 2, height - 2]]), labels=[text],
                               colors=[(0, 200, 0) if right else (220, 0, 0)], width=3, label_colors="black",
                               fill_labels=True, **_font())
