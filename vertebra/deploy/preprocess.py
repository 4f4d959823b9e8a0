"""Applying an artifact's :class:`~vertebra.weights.artifact.Preprocessing`, and mapping outputs back.

The steps are the ones ``vertebra.data.transforms`` uses for evaluation, in the same order and on the
same dtype (resize on the uint8 image, crop, then float and normalise), so the model sees the pixels
it was evaluated on.  Every step that moves pixels is recorded in a :class:`Geometry`, and outputs
are reported in the original image's frame: boxes scaled and shifted, dense maps (semantic logits,
instance mask probabilities) resized bilinearly before any argmax or threshold, so edges do not turn
into the staircase of an upsampled label map.  Pixels a centre crop cut away were never seen by the
model; :func:`unseen` marks them so a semantic mask can say "unknown" (255) there instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from ..weights.artifact import Preprocessing

__all__ = ["Geometry", "preprocess", "boxes_to_original", "dense_to_original", "unseen"]


@dataclass(frozen=True)
class Geometry:
    """Where the model input sits in the original image: original -> resized -> crop window."""

    original: tuple[int, int]            # (H, W) of the decoded image
    resized: tuple[int, int]             # (h, w) after the resize step (the original without one)
    crop: tuple[int, int, int, int]      # (top, left, height, width) of the input in the resized frame

    @property
    def input_size(self) -> tuple[int, int]:
        return self.crop[2], self.crop[3]


def preprocess(image: Tensor, preprocessing: Preprocessing) -> tuple[Tensor, Geometry]:
    """A uint8 (3, H, W) image -> the float32 (3, h, w) model input and its :class:`Geometry`."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    mode = preprocessing.resize
    if mode in ("shorter", "shorter_crop"):
        image = TF.resize(image, preprocessing.size, antialias=True)
    elif mode == "square":
        image = TF.resize(image, [preprocessing.size, preprocessing.size], antialias=True)
    resized = (int(image.shape[-2]), int(image.shape[-1]))
    crop = (0, 0, *resized)
    if mode == "shorter_crop":
        size = preprocessing.crop
        # torchvision's center_crop: these offsets (negative where it pads a smaller image)
        crop = (int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0)), size, size)
        image = TF.center_crop(image, [size, size])
    tensor = TF.to_dtype(image, torch.float32, scale=True)
    if preprocessing.mean is not None:
        tensor = TF.normalize(tensor, list(preprocessing.mean), list(preprocessing.std))
    return tensor, Geometry((height, width), resized, crop)


def boxes_to_original(boxes: Tensor, geometry: Geometry) -> Tensor:
    """XYXY boxes in the model input's frame -> the original image's, clipped to it."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).float()
    top, left = geometry.crop[:2]
    (height, width), (rh, rw) = geometry.original, geometry.resized
    offset = torch.tensor([left, top, left, top], dtype=torch.float32)
    scale = torch.tensor([width / rw, height / rh, width / rw, height / rh], dtype=torch.float32)
    out = (boxes.float().cpu() + offset) * scale
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def dense_to_original(maps: Tensor, geometry: Geometry) -> Tensor:
    """(N, C, h, w) float maps over the model input -> (N, C, H, W) over the original image.

    Outside a crop window the maps repeat their edge (see :func:`unseen` for those pixels), so
    the bilinear resize does not blend the window's border with made-up values.
    """
    maps = maps.float().cpu()
    top, left, crop_h, crop_w = geometry.crop
    rh, rw = geometry.resized
    if (top, left, crop_h, crop_w) != (0, 0, rh, rw):
        # a negative offset: the crop padded a smaller image; drop that padding first
        maps = maps[..., max(0, -top):, max(0, -left):]
        top, left = max(0, top), max(0, left)
        maps = maps[..., : rh - top, : rw - left]
        pad = (left, rw - left - maps.shape[-1], top, rh - top - maps.shape[-2])
        maps = F.pad(maps, pad, mode="replicate")
    if tuple(maps.shape[-2:]) == geometry.original:
        return maps
    return F.interpolate(maps, size=geometry.original, mode="bilinear", align_corners=False)


def unseen(geometry: Geometry) -> Tensor | None:
    """(H, W) bool: original pixels outside the crop window (None when the model saw every pixel)."""
    top, left, crop_h, crop_w = geometry.crop
    (height, width), (rh, rw) = geometry.original, geometry.resized
    if top <= 0 and left <= 0 and top + crop_h >= rh and left + crop_w >= rw:
        return None
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * (rh / height)   # pixel centres, resized frame
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * (rw / width)
    inside_y = (ys >= top) & (ys < top + crop_h)
    inside_x = (xs >= left) & (xs < left + crop_w)
    return ~(inside_y[:, None] & inside_x[None, :])
