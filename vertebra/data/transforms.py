"""Joint image / box / mask transforms, built only from torchvision ``transforms.v2`` and ``tv_tensors``.

Because samples carry ``tv_tensors`` (``Image``, ``BoundingBoxes``, ``Mask``), one ``v2`` pipeline
moves boxes and masks with the pixels: a horizontal flip flips the boxes, a crop crops the masks
with nearest-neighbour interpolation.  Nothing here flips a box by hand.

Normalisation differs by task, following torchvision:

- **detection** outputs float images in ``[0, 1]`` *without* mean/std normalisation: torchvision's
  detection models normalise inside the model (``GeneralizedRCNNTransform``), so normalising here
  would do it twice.  Boxes stay in the input image's coordinates because the model resizes
  internally and maps its predictions back.
- **segmentation** and **classification** outputs are ImageNet-normalised float images
  (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`): those models take normalised input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from ..errors import ConfigError

__all__ = ["detection_transforms", "segmentation_transforms", "classification_transforms",
           "collate_detection", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _check_size(size: int | None, where: str) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"{where}: size must be a positive integer or None, got {size!r}")


def detection_transforms(train: bool, size: int | None = None) -> v2.Compose:
    """Transforms for ``(image, target)`` detection samples (see :class:`~vertebra.data.CocoDetection`).

    Train: horizontal flip and a mild photometric distortion, then
    ``SanitizeBoundingBoxes`` so boxes that became degenerate are dropped together with their
    labels and masks.  Eval: no augmentation.  Both end in float32 images in ``[0, 1]``, not
    normalised (the detection model normalises).

    Args:
        train: augment or not.
        size: if given, resize so the *shorter* side is ``size`` (aspect ratio kept); ``None``
            leaves sizes alone, which is usual for detection as the model resizes itself.
    """
    _check_size(size, "detection_transforms")
    steps: list[Any] = [v2.ToImage()]
    if train:
        steps += [v2.RandomHorizontalFlip(0.5), v2.RandomPhotometricDistort(p=0.3)]
    if size is not None:
        steps.append(v2.Resize(size, antialias=True))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train:
        steps.append(v2.SanitizeBoundingBoxes())
    return v2.Compose(steps)


def segmentation_transforms(train: bool, size: int | None = None) -> v2.Compose:
    """Transforms for ``(image, mask)`` semantic segmentation samples.

    Train: ``RandomResizedCrop`` to ``size`` x ``size`` (scale 0.5-1) when ``size`` is given, and a
    horizontal flip.  Eval: ``Resize`` to ``size`` x ``size`` when given.  Masks are resized with
    nearest-neighbour (``v2`` does that for ``tv_tensors.Mask``) and keep their dtype; images become
    ImageNet-normalised float32.  A fixed ``size`` makes every sample the same shape, which the
    default collate needs; with ``size=None`` the images must already share one size.
    """
    _check_size(size, "segmentation_transforms")
    steps: list[Any] = [v2.ToImage()]
    if size is not None:
        steps.append(v2.RandomResizedCrop((size, size), scale=(0.5, 1.0), antialias=True) if train
                     else v2.Resize((size, size), antialias=True))
    if train:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def classification_transforms(train: bool, size: int = 224) -> v2.Compose:
    """ImageNet-style classification transforms.

    Train: ``RandomResizedCrop(size)`` and a horizontal flip.  Eval: resize the shorter side to
    ``size / 0.875`` and centre-crop ``size`` (torchvision's evaluation recipe).  Output:
    ImageNet-normalised float32 images of ``size`` x ``size``.
    """
    _check_size(size, "classification_transforms")
    if size is None:
        raise ConfigError("classification_transforms: size must be given (batches need one image size)")
    steps: list[Any] = [v2.ToImage()]
    if train:
        steps += [v2.RandomResizedCrop((size, size), antialias=True), v2.RandomHorizontalFlip(0.5)]
    else:
        steps += [v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def collate_detection(batch: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """``[(image, target), ...]`` -> ``([image, ...], [target, ...])``.

    Detection images differ in size and targets in box count, so they cannot be stacked; the
    torchvision detection models take lists.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets

