"""Semantic segmentation data: class-index masks from COCO instance files, or from image/mask folders.

Both return ``(image, mask)`` where ``mask`` is a ``tv_tensors.Mask`` (H, W) int64 of class indices,
0 = background and 255 = ignore, ready for :func:`vertebra.data.segmentation_transforms` and a
``CrossEntropyLoss(ignore_index=255)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import ConfigError, DataError, UnknownNameError
from ._cocofile import (PathLike, annotation_mask, category_labels, check_image_files, decode_rgb, load_coco,
                        polygon_problem, read_image)

__all__ = ["CocoSemantic", "MaskFolderSegmentation", "COCO_VOC_CATEGORY_IDS", "IGNORE_INDEX"]

IGNORE_INDEX = 255

#: COCO category ids of the 20 Pascal VOC classes, in VOC order (aeroplane ... tvmonitor), as
#: torchvision's segmentation references use them: ``CocoSemantic(..., categories=COCO_VOC_CATEGORY_IDS)``.
COCO_VOC_CATEGORY_IDS: tuple[int, ...] = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class CocoSemantic(Dataset):
    """Semantic masks rendered from a COCO instances file, the way torchvision's references do.

    Every annotation of a chosen category is rasterised; pixel value = its label (1..K in the
    order of ``categories``); pixels covered by two or more annotations become 255 (ignore),
    because which one is right is unknown; the rest is 0 (background).  Annotations of other
    categories are treated as background; crowd regions are painted like any other instance, as
    torchvision's references do.

    Args:
        image_dir, ann_file: as for :class:`~vertebra.data.CocoDetection`.
        transforms: ``transforms(image, mask)``, e.g. :func:`vertebra.data.segmentation_transforms`.
        categories: the categories to keep, as COCO ids or names, mapped to labels ``1..K`` in this
            order (e.g. :data:`COCO_VOC_CATEGORY_IDS`); ``None`` keeps all, sorted by id.
        strict: refuse annotations whose segmentation cannot be rasterised instead of skipping them
            with a counted warning.

    Raises:
        DataError: as :class:`~vertebra.data.CocoDetection` for broken files.
        UnknownNameError: a category name or id that is not in the file (with suggestions).
        ConfigError: a category listed twice, or an empty list.
    """

    def __init__(self, image_dir: PathLike, ann_file: PathLike,
                 transforms: Callable[..., Any] | None = None, *,
                 categories: Sequence[int | str] | None = None, strict: bool = False):
        self.ann_file = str(ann_file)
        self.coco = load_coco(ann_file)
        self.image_dir = check_image_files(self.coco, image_dir, ann_file)
        self.transforms = transforms
        self.ids: list[int] = sorted(self.coco.imgs)
        #: COCO category id of label ``i`` is ``category_ids[i - 1]``.
        self.category_ids: tuple[int, ...] = self._resolve(categories)
        #: Names by label; index 0 is ``"__background__"``.
        self.category_id_to_label, self.classes = category_labels(self.coco, self.category_ids)
        self._annotations, self.skipped_annotations = self._usable_annotations(strict)

    @property
    def num_classes(self) -> int:
        """Number of labels including background (K + 1): a segmentation head's ``num_classes``."""
        return len(self.classes)

    def _resolve(self, categories: Sequence[int | str] | None) -> tuple[int, ...]:
        if categories is None:
            return tuple(sorted(self.coco.cats))
        if isinstance(categories, (str, int)) or not categories:
            raise ConfigError(f"categories must be a non-empty list of COCO category ids or names, "
                              f"got {categories!r}")
        by_name = {cat["name"]: cid for cid, cat in self.coco.cats.items()}
        resolved = []
        for item in categories:
            if isinstance(item, str):
                if item not in by_name:
                    raise UnknownNameError(f"category in {self.ann_file!r}", item, by_name)
                resolved.append(by_name[item])
            elif isinstance(item, int) and not isinstance(item, bool) and item in self.coco.cats:
                resolved.append(item)
            else:
                raise UnknownNameError(f"category id in {self.ann_file!r}", str(item), map(str, self.coco.cats))
        duplicates = sorted({c for c in resolved if resolved.count(c) > 1})
        if duplicates:
            raise ConfigError(f"categories lists category id(s) {duplicates} more than once")
        return tuple(resolved)

    def _usable_annotations(self, strict: bool) -> tuple[dict[int, list[dict]], list[int]]:
        usable: dict[int, list[dict]] = {image_id: [] for image_id in self.ids}
        skipped: list[tuple[int, str]] = []
        for ann in sorted(self.coco.anns.values(), key=lambda a: a["id"]):
            if ann["category_id"] not in self.category_id_to_label:
                continue
            problem = polygon_problem(ann.get("segmentation"))
            if problem is not None:
                skipped.append((ann["id"], problem))
            else:
                usable[ann["image_id"]].append(ann)
        if skipped:
            shown = "; ".join(f"annotation id {aid}: {why}" for aid, why in skipped[:5])
            if strict:
                raise DataError(f"{self.ann_file!r}: {len(skipped)} annotation(s) without a usable "
                                f"segmentation: {shown}; fix them or pass strict=False to skip them")
            warnings.warn(f"{self.ann_file!r}: skipped {len(skipped)} annotation(s) without a usable "
                          f"segmentation: {shown}", stacklevel=3)
        return usable, [aid for aid, _ in skipped]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image_id = self.ids[index]
        record = self.coco.imgs[image_id]
        image = read_image(self.image_dir / record["file_name"], record, self.ann_file)
        mask = tv_tensors.Mask(self.semantic_mask(image_id))
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask

    def semantic_mask(self, image_id: int) -> torch.Tensor:
        """The (H, W) int64 label map of one image (0 background, 255 where instances overlap)."""
        record = self.coco.imgs[image_id]
        anns = self._annotations[image_id]
        if not anns:
            return torch.zeros((record["height"], record["width"]), dtype=torch.int64)
        masks = torch.from_numpy(np.stack([annotation_mask(self.coco, ann) for ann in anns])).to(torch.int64)
        labels = torch.tensor([self.category_id_to_label[ann["category_id"]] for ann in anns])
        semantic = (masks * labels[:, None, None]).amax(0)
        semantic[masks.sum(0) > 1] = IGNORE_INDEX
        return semantic

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {len(self.classes) - 1} classes, ann_file={self.ann_file!r})"


class MaskFolderSegmentation(Dataset):
    """Images in one folder, label maps in another, paired by file stem (``a.jpg`` <-> ``a.png``).

    Masks are single-channel PNGs (mode ``L`` or ``P``, the VOC / Cityscapes convention) whose pixel
    values are class indices; 255 means ignore.

    Args:
        image_dir, mask_dir: the two folders.
        transforms: ``transforms(image, mask)``.
        classes: optional names by label, index 0 the background (masks carry no names); sets
            ``num_classes`` to ``len(classes)`` when that is not given.
        num_classes: if given, every mask value must be below it or equal ``ignore_index`` (checked
            as samples are read), so a mislabelled mask fails loudly instead of training on garbage.
        mask_suffix: the masks' file extension.

    Raises:
        DataError: a missing folder, an image without a mask, no images at all, an undecodable or
            multi-channel mask, an image/mask size mismatch, a value out of range.
    """

    def __init__(self, image_dir: PathLike, mask_dir: PathLike, transforms: Callable[..., Any] | None = None,
                 *, classes: Sequence[str] | None = None, num_classes: int | None = None,
                 ignore_index: int = IGNORE_INDEX, mask_suffix: str = ".png"):
        self.image_dir, self.mask_dir = Path(image_dir), Path(mask_dir)
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                raise DataError(f"folder {str(folder)!r} does not exist")
        self.images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not self.images:
            raise DataError(f"image folder {str(self.image_dir)!r} holds no images "
                            f"({', '.join(_IMAGE_SUFFIXES)}); the split is empty")
        self.masks = [self.mask_dir / (p.stem + mask_suffix) for p in self.images]
        for image, mask in zip(self.images, self.masks):
            if not mask.is_file():
                raise DataError(f"image {str(image)!r} has no mask: expected {str(mask)!r}")
        self.transforms = transforms
        if classes is not None:
            classes = tuple(classes)
            if num_classes is not None and num_classes != len(classes):
                raise ConfigError(f"num_classes={num_classes} but {len(classes)} class names were given")
            num_classes = len(classes)
        #: Names by label (index 0 background) when given, else ``None``.
        self.classes: tuple[str, ...] | None = classes
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image = decode_rgb(self.images[index], f"sample {index} of {str(self.image_dir)!r}")
        mask = self._read_mask(self.masks[index], tuple(image.shape[-2:]))
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask

    def _read_mask(self, path: Path, size: tuple[int, int]) -> tv_tensors.Mask:
        try:
            with Image.open(path) as handle:
                mode, array = handle.mode, np.array(handle)  # "P" keeps palette indices, not colours
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"mask file {str(path)!r} cannot be decoded ({error}); replace it") from error
        if array.ndim != 2:
            raise DataError(f"mask file {str(path)!r} has mode {mode} ({array.shape[-1]} channels); masks must "
                            f"be single-channel class indices (PNG mode L or P)")
        if array.shape != size:
            raise DataError(f"mask file {str(path)!r} is {array.shape[1]}x{array.shape[0]} but its image is "
                            f"{size[1]}x{size[0]}")
        mask = torch.from_numpy(array.astype(np.int64))
        if self.num_classes is not None:
            bad = mask[(mask >= self.num_classes) & (mask != self.ignore_index)].unique()
            if bad.numel():
                raise DataError(f"mask file {str(path)!r} has values {bad.tolist()[:10]} outside 0..{self.num_classes - 1} "
                                f"(and {self.ignore_index} = ignore); check num_classes or the mask")
        return tv_tensors.Mask(mask)
