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
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import ConfigError

__all__ = ["detection_transforms", "segmentation_transforms", "classification_transforms",
           "collate_detection", "batch_mix", "AUTO_AUGMENT", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


#: ``auto_augment`` policies: name -> the ``transforms.v2`` policy (torchvision's reference names).
AUTO_AUGMENT = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
    "randaugment": lambda: v2.RandAugment(),
    "trivialaugment": lambda: v2.TrivialAugmentWide(),
    "augmix": lambda: v2.AugMix(),
}


def _check_size(size: int | None, where: str) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"{where}: size must be a positive integer or None, got {size!r}")


def detection_transforms(train: bool, size: int | None = None, *, hflip: float = 0.5,
                         scale_jitter: Sequence[float] | None = None, iou_crop: bool = False,
                         zoom_out: bool = False) -> v2.Compose:
    """Transforms for ``(image, target)`` detection samples (see :class:`~vertebra.data.CocoDetection`).

    Train: horizontal flip (probability ``hflip``) and a mild photometric distortion, optionally
    the recipes of torchvision's detection references -- ``zoom_out`` (``RandomZoomOut``, the
    canvas up to 4x, half the time), ``iou_crop`` (``RandomIoUCrop``, SSD's crop keeping boxes at a
    sampled minimum IoU) and ``scale_jitter`` (``ScaleJitter`` of ``(size, size)`` by a factor in
    the range: large-scale jitter is ``[0.1, 2.0]``; replaces the plain resize) -- then
    ``SanitizeBoundingBoxes`` so boxes that became degenerate are dropped together with their
    labels and masks.  Eval: no augmentation.  Both end in float32 images in ``[0, 1]``, not
    normalised (the detection model normalises).

    Args:
        train: augment or not.
        size: if given, resize so the *shorter* side is ``size`` (aspect ratio kept); ``None``
            leaves sizes alone, which is usual for detection as the model resizes itself.
    """
    _check_size(size, "detection_transforms")
    if train and scale_jitter is not None and size is None:
        raise ConfigError("detection_transforms: scale_jitter scales around size x size; set a size (data.size)")
    steps: list[Any] = [v2.ToImage()]
    if train:
        steps += [v2.RandomHorizontalFlip(hflip), v2.RandomPhotometricDistort(p=0.3)]
        if zoom_out:
            steps.append(v2.RandomZoomOut(fill={tv_tensors.Image: (124, 116, 104), "others": 0}))
        if iou_crop:
            steps += [v2.RandomIoUCrop(), v2.SanitizeBoundingBoxes()]
        if scale_jitter is not None:
            steps.append(v2.ScaleJitter((size, size), scale_range=tuple(scale_jitter), antialias=True))
    if size is not None and not (train and scale_jitter is not None):
        steps.append(v2.Resize(size, antialias=True))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if train:
        steps.append(v2.SanitizeBoundingBoxes())
    return v2.Compose(steps)


def segmentation_transforms(train: bool, size: int | None = None, *, hflip: float = 0.5,
                            scale_range: Sequence[float] = (0.5, 1.0)) -> v2.Compose:
    """Transforms for ``(image, mask)`` semantic segmentation samples.

    Train: ``RandomResizedCrop`` to ``size`` x ``size`` (the crop covering ``scale_range`` of the
    image's area) when ``size`` is given, and a horizontal flip (probability ``hflip``).  Eval:
    ``Resize`` to ``size`` x ``size`` when given.  Masks are resized with nearest-neighbour (``v2``
    does that for ``tv_tensors.Mask``) and keep their dtype; images become ImageNet-normalised
    float32.  A fixed ``size`` makes every sample the same shape, which the default collate needs;
    with ``size=None`` the images must already share one size.
    """
    _check_size(size, "segmentation_transforms")
    steps: list[Any] = [v2.ToImage()]
    if size is not None:
        steps.append(v2.RandomResizedCrop((size, size), scale=tuple(scale_range), antialias=True) if train
                     else v2.Resize((size, size), antialias=True))
    if train:
        steps.append(v2.RandomHorizontalFlip(hflip))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def classification_transforms(train: bool, size: int = 224, *, hflip: float = 0.5, auto_augment: str = "none",
                              random_erasing: float = 0.0) -> v2.Compose:
    """ImageNet-style classification transforms.

    Train: ``RandomResizedCrop(size)``, a horizontal flip (probability ``hflip``), the
    ``auto_augment`` policy (:data:`AUTO_AUGMENT`: ``autoaugment``, ``randaugment``,
    ``trivialaugment``, ``augmix``; ``none``) and, after normalisation, ``RandomErasing`` with
    probability ``random_erasing`` -- the order of torchvision's classification reference.  Eval:
    resize the shorter side to ``size / 0.875`` and centre-crop ``size`` (torchvision's evaluation
    recipe).  Output: ImageNet-normalised float32 images of ``size`` x ``size``.
    """
    _check_size(size, "classification_transforms")
    if size is None:
        raise ConfigError("classification_transforms: size must be given (batches need one image size)")
    if auto_augment != "none" and auto_augment not in AUTO_AUGMENT:
        raise ConfigError(f"classification_transforms: auto_augment must be 'none' or one of "
                          f"{', '.join(map(repr, AUTO_AUGMENT))}, got {auto_augment!r}")
    steps: list[Any] = [v2.ToImage()]
    if train:
        steps += [v2.RandomResizedCrop((size, size), antialias=True), v2.RandomHorizontalFlip(hflip)]
        if auto_augment != "none":
            steps.append(AUTO_AUGMENT[auto_augment]())
    else:
        steps += [v2.Resize(int(round(size / 0.875)), antialias=True), v2.CenterCrop(size)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing))
    return v2.Compose(steps)


def batch_mix(num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> v2.Transform | None:
    """MixUp and / or CutMix of a classification batch ``(images, labels)`` -> soft labels, or None.

    Both set: each batch gets one of them at random (torchvision's reference).  Applied to whole
    batches, so the training step calls it (with the training RNG, which a resume restores).
    """
    mixes = [mix(alpha=alpha, num_classes=num_classes)
             for mix, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
    if not mixes:
        return None
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def collate_detection(batch: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """``[(image, target), ...]`` -> ``([image, ...], [target, ...])``.

    Detection images differ in size and targets in box count, so they cannot be stacked; the
    torchvision detection models take lists.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets

