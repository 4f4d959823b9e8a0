"""Data assembly: from the ``data`` section of a training config to two splits and a loader.

Each task reads one family of layouts (COCO instances, segmentation masks, class folders); the
task table (``tasks.py``) names which reader a task uses, so nothing here dispatches on a task
name.  The built-in ``shapes`` set is generated once into ``<out>/data`` (or ``data.root``) and then
read exactly like a ``coco`` set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError, DataError
from .config import DataConfig
from .distributed import EpochSampler

__all__ = ["DataBundle", "prepare_shapes", "instances_data", "semantic_data", "classification_data",
           "make_loader", "train_images_folder"]


@dataclass
class DataBundle:
    """The two splits plus what the model and the metric need to know about them."""

    train: Any
    val: Any
    num_classes: int                  # including background where the task has one
    class_names: list[str]
    collate: Callable | None = None
    coco_gt: Any = None               # pycocotools COCO of the val split (detection / instance)
    extra: dict = field(default_factory=dict)


def make_loader(dataset: Any, sampler: EpochSampler, batch_size: int, bundle: DataBundle, workers: int,
                drop_last: bool, seed: int) -> DataLoader:
    """A loader whose order is the sampler's and whose worker seeds come from ``seed`` alone."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=bundle.collate,
                      num_workers=workers, drop_last=drop_last, generator=generator,
                      persistent_workers=False, pin_memory=False)


# -- the built-in shapes set -------------------------------------------------------------------------

def _shapes_root(config: DataConfig, out_dir: Path) -> Path:
    return Path(config.root) if config.root else out_dir / "data"


def prepare_shapes(config: DataConfig, out_dir: Path) -> None:
    """Generate the built-in shapes set (rank 0 only, before the splits are read).

    A set already on disk with the same seed, image size and counts is reused (the generator is
    deterministic, so regenerating would write the same bytes).
    """
    from ..data import generate_shapes

    root = _shapes_root(config, out_dir)
    if not _shapes_present(root, config):
        generate_shapes(root, num_train=config.num_train, num_val=config.num_val,
                        image_size=config.image_size, seed=config.shapes_seed)


def _shapes_present(root: Path, config: DataConfig) -> bool:
    for split, count in (("train", config.num_train), ("val", config.num_val)):
        try:
            data = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        except (OSError, ValueError):
            return False
        info = data.get("info", {}) if isinstance(data, dict) else {}
        if (info.get("seed"), info.get("image_size"), len(data.get("images", []))) != (
                config.shapes_seed, config.image_size, count):
            return False
        if not all((root / split / image["file_name"]).is_file() for image in data["images"]):
            return False
    return True


def _holdout(config: DataConfig, val_keys: tuple[str, ...]) -> bool:
    """Whether the validation set is carved from the training set (``data.val_split``); conflicts refused."""
    if config.val_split is None:
        return False
    if config.format == "shapes":
        raise ConfigError("the shapes set is generated with its own validation split (data.num_val); remove "
                          "data.val_split", path="data.val_split")
    given = [f"data.{key}" for key in val_keys if getattr(config, key) is not None]
    if given:
        raise ConfigError(f"data.val_split holds out part of the training set, but {', '.join(given)} name a "
                          f"validation set too: keep one", path="data.val_split")
    return True


def _coco_paths(config: DataConfig, out_dir: Path) -> tuple[Path, Path, Path | None, Path | None]:
    """Image folders and annotation files of both splits; the val pair is None with ``val_split``."""
    if config.format == "shapes":      # the layout generate_shapes writes (see vertebra.data.shapes)
        _holdout(config, ())
        root = _shapes_root(config, out_dir)
        return (root / "train", root / "annotations" / "instances_train.json",
                root / "val", root / "annotations" / "instances_val.json")
    holdout = _holdout(config, ("val_images", "val_annotations"))
    names = ("train_images", "train_annotations") + (() if holdout else ("val_images", "val_annotations"))
    missing = [name for name in names if getattr(config, name) is None]
    if missing:
        raise ConfigError(f"data.format={config.format!r} needs {', '.join('data.' + m for m in missing)} "
                          f"(image folders and instances_*.json files)"
                          + ("; or set data.val_split to hold out part of the training set"
                             if any(m.startswith("val") for m in missing) else ""), path="data")
    root = Path(config.root) if config.root else Path(".")
    paths = [root / getattr(config, name) for name in names]
    return (paths[0], paths[1], *(paths[2:] or [None, None]))  # type: ignore[return-value]


def train_images_folder(config: DataConfig, out_dir: Path) -> Path:
    """The folder of training images of any layout (what int8 calibration reads); the shapes set
    must already be generated (:func:`prepare_shapes`)."""
    if config.format in ("shapes", "coco"):
        return _coco_paths(config, out_dir)[0]
    if config.train_images is None:
        raise ConfigError(f"data.format={config.format!r} needs data.train_images (the image folder)",
                          path="data.train_images")
    return Path(config.root or ".") / config.train_images


def _two_splits(config: DataConfig, make: Callable[[bool], tuple[Any, Any]], holdout: bool,
                where: str) -> tuple[Any, Any, list[int] | None]:
    """``make(holdout)`` -> (train, val) data sets; with ``holdout`` both read the training set and are
    cut by :func:`vertebra.data.split_indices` (the val indices come back); else their categories
    must agree."""
    from .. import data as vdata

    train, val = make(holdout)
    if not holdout:
        _same_categories(train, val, where)
        return train, val, None
    train_indices, val_indices = vdata.split_indices(len(train), config.val_split, f"samples of {where}")
    return vdata.Split(train, train_indices), vdata.Split(val, val_indices), val_indices


def _same_categories(train: Any, val: Any, where: str) -> None:
    """Refuse train and val splits whose labels would mean different things."""
    for attribute in ("category_ids", "classes"):
        ours, theirs = getattr(train, attribute, None), getattr(val, attribute, None)
        if ours is not None and theirs is not None and tuple(ours) != tuple(theirs):
            raise DataError(f"the training and validation sets of {where} disagree on their categories "
                            f"({attribute}: train {list(ours)} vs val {list(theirs)}); both must list the "
                            f"same categories (ids and names), or the labels would mean different things")


# -- one reader per layout family ----------------------------------------------------------------------

def instances_data(config: DataConfig, out_dir: Path, *, task: str, masks: bool) -> DataBundle:
    """COCO instances (boxes, and masks with ``masks``): detection and instance segmentation."""
    from .. import data as vdata

    if config.format not in ("shapes", "coco"):
        raise ConfigError(f"task {task!r} reads COCO instances; data.format must be 'shapes' or 'coco', "
                          f"got {config.format!r}", path="data.format")
    train_images, train_ann, val_images, val_ann = _coco_paths(config, out_dir)

    def make(holdout: bool) -> tuple[Any, Any]:
        # Detection models resize internally (GeneralizedRCNNTransform), so validation images keep
        # their size: predictions then come back in the original coordinates COCOeval expects.
        augment = config.augment
        train = vdata.CocoDetection(train_images, train_ann, vdata.detection_transforms(
            True, config.size, hflip=augment.hflip, scale_jitter=augment.scale_jitter, iou_crop=augment.iou_crop,
            zoom_out=augment.zoom_out), with_masks=masks)
        val = vdata.CocoDetection(train_images if holdout else val_images, train_ann if holdout else val_ann,
                                  vdata.detection_transforms(False, None), with_masks=masks)
        return train, val

    train, val, held = _two_splits(config, make, val_ann is None, str(train_ann))
    coco_gt = _coco_of(val) if held is None else vdata.coco_subset(_coco_of(val), [val.ids[i] for i in held])
    names = _category_names(train)
    return DataBundle(train, val, len(names) + 1, ["background", *names], vdata.collate_detection,
                      coco_gt=coco_gt)


def semantic_data(config: DataConfig, out_dir: Path) -> DataBundle:
    """Per-pixel class masks: COCO category masks (``shapes`` / ``coco``) or image/mask folder pairs."""
    from .. import data as vdata

    size = config.size
    if config.format in ("shapes", "coco"):
        train_images, train_ann, val_images, val_ann = _coco_paths(config, out_dir)

        def make(holdout: bool) -> tuple[Any, Any]:
            return (vdata.CocoSemantic(train_images, train_ann, _segmentation_train(config),
                                       categories=config.categories),
                    vdata.CocoSemantic(train_images if holdout else val_images, train_ann if holdout else val_ann,
                                       vdata.segmentation_transforms(False, size), categories=config.categories))

        train, val, _ = _two_splits(config, make, val_ann is None, str(train_ann))
        names = _category_names(train)
        return DataBundle(train, val, len(names) + 1, ["background", *names])
    if config.format != "mask_folder":
        raise ConfigError(f"task 'semantic' reads 'shapes', 'coco' or 'mask_folder' data, got "
                          f"{config.format!r}", path="data.format")
    return _mask_folder_data(config)


def _mask_folder_data(config: DataConfig) -> DataBundle:
    """Image / mask folder pairs; ``data.classes`` names the mask values (masks carry no names)."""
    from .. import data as vdata

    holdout = _holdout(config, ("val_images", "val_annotations"))
    need = [n for n in ("train_images", "train_annotations") + (() if holdout else ("val_images", "val_annotations"))
            if getattr(config, n) is None]
    if need:
        raise ConfigError("data.format='mask_folder' needs train_images/val_images (image folders) and "
                          "train_annotations/val_annotations (mask folders), or data.val_split instead of the "
                          f"val pair; missing: {', '.join('data.' + n for n in need)}", path="data")
    if config.classes is None:
        raise ConfigError("data.format='mask_folder' needs data.classes: the names of the mask values 0..K-1, "
                          "value 0 first (e.g. [background, road, car]); mask files carry no names",
                          path="data.classes")
    root = Path(config.root or ".")

    def make(holdout: bool) -> tuple[Any, Any]:
        images, masks = root / config.train_images, root / config.train_annotations
        val_images, val_masks = (images, masks) if holdout else (root / config.val_images,
                                                                 root / config.val_annotations)
        return (vdata.MaskFolderSegmentation(images, masks, _segmentation_train(config), classes=config.classes),
                vdata.MaskFolderSegmentation(val_images, val_masks, vdata.segmentation_transforms(False, config.size),
                                             classes=config.classes))

    train, val, _ = _two_splits(config, make, holdout, str(root / config.train_images))
    return DataBundle(train, val, len(config.classes), [str(name) for name in config.classes])


def classification_data(config: DataConfig, out_dir: Path) -> DataBundle:
    """One sub-folder per class (torchvision's ImageFolder layout) for each split."""
    from .. import data as vdata

    if config.format != "image_folder":
        raise ConfigError(f"task 'classification' reads data.format='image_folder' (class sub-folders), got "
                          f"{config.format!r}", path="data.format")
    holdout = _holdout(config, ("val_images",))
    if config.train_images is None or (config.val_images is None and not holdout):
        raise ConfigError("data.format='image_folder' needs data.train_images and data.val_images "
                          "(folders with one sub-folder per class), or data.val_split instead of "
                          "data.val_images", path="data")
    root = Path(config.root or ".")

    def make(holdout: bool) -> tuple[Any, Any]:
        val_folder = root / (config.train_images if holdout else config.val_images)
        augment = config.augment
        return (vdata.ImageFolderClassification(root / config.train_images, vdata.classification_transforms(
                    True, config.size, hflip=augment.hflip, auto_augment=augment.auto_augment,
                    random_erasing=augment.random_erasing)),
                vdata.ImageFolderClassification(val_folder, vdata.classification_transforms(False, config.size)))

    train, val, _ = _two_splits(config, make, holdout, str(root / config.train_images))
    names = list(getattr(train, "classes", []))
    augment = config.augment    # batch-level recipes: the training step applies them (ClassificationTask)
    extra = {"mix": vdata.batch_mix(len(names), augment.mixup_alpha, augment.cutmix_alpha),
             "label_smoothing": augment.label_smoothing}
    return DataBundle(train, val, len(names), names, extra=extra)


def _segmentation_train(config: DataConfig) -> Any:
    from .. import data as vdata

    return vdata.segmentation_transforms(True, config.size, hflip=config.augment.hflip,
                                         scale_range=config.augment.scale_range)


def _category_names(dataset: Any) -> list[str]:
    for attribute in ("class_names", "category_names", "categories", "classes"):
        names = getattr(dataset, attribute, None)
        if names:
            names = list(names)
            if names and isinstance(names[0], dict):
                names = [c["name"] for c in names]
            if names and str(names[0]).strip("_").lower() == "background":
                names = names[1:]
            return [str(n) for n in names]
    raise DataError(f"{type(dataset).__name__} does not say its class names")


def _coco_of(dataset: Any) -> Any:
    coco = getattr(dataset, "coco", None)
    if coco is None:
        raise DataError(f"{type(dataset).__name__} has no pycocotools COCO object for evaluation")
    return coco
