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


def _coco_paths(config: DataConfig, out_dir: Path) -> tuple[Path, Path, Path, Path]:
    if config.format == "shapes":      # the layout generate_shapes writes (see vertebra.data.shapes)
        root = _shapes_root(config, out_dir)
        return (root / "train", root / "annotations" / "instances_train.json",
                root / "val", root / "annotations" / "instances_val.json")
    names = ("train_images", "train_annotations", "val_images", "val_annotations")
    missing = [name for name in names if getattr(config, name) is None]
    if missing:
        raise ConfigError(f"data.format={config.format!r} needs {', '.join('data.' + m for m in missing)} "
                          f"(image folders and instances_*.json files)", path="data")
    root = Path(config.root) if config.root else Path(".")
    return tuple(root / getattr(config, name) for name in names)  # type: ignore[return-value]


def train_images_folder(config: DataConfig, out_dir: Path) -> Path:
    """The folder of training images of any layout (what int8 calibration reads); the shapes set
    must already be generated (:func:`prepare_shapes`)."""
    if config.format in ("shapes", "coco"):
        return _coco_paths(config, out_dir)[0]
    if config.train_images is None:
        raise ConfigError(f"data.format={config.format!r} needs data.train_images (the image folder)",
                          path="data.train_images")
    return Path(config.root or ".") / config.train_images


# -- one reader per layout family ----------------------------------------------------------------------

def instances_data(config: DataConfig, out_dir: Path, *, task: str, masks: bool) -> DataBundle:
    """COCO instances (boxes, and masks with ``masks``): detection and instance segmentation."""
    from .. import data as vdata

    if config.format not in ("shapes", "coco"):
        raise ConfigError(f"task {task!r} reads COCO instances; data.format must be 'shapes' or 'coco', "
                          f"got {config.format!r}", path="data.format")
    train_images, train_ann, val_images, val_ann = _coco_paths(config, out_dir)
    # Detection models resize internally (GeneralizedRCNNTransform), so validation images keep
    # their size: predictions then come back in the original coordinates COCOeval expects.
    train = vdata.CocoDetection(train_images, train_ann, vdata.detection_transforms(True, config.size),
                                with_masks=masks)
    val = vdata.CocoDetection(val_images, val_ann, vdata.detection_transforms(False, None), with_masks=masks)
    names = _category_names(train)
    return DataBundle(train, val, len(names) + 1, ["background", *names], vdata.collate_detection,
                      coco_gt=_coco_of(val))


def semantic_data(config: DataConfig, out_dir: Path) -> DataBundle:
    """Per-pixel class masks: COCO category masks (``shapes`` / ``coco``) or image/mask folder pairs."""
    from .. import data as vdata

    size = config.size
    if config.format in ("shapes", "coco"):
        train_images, train_ann, val_images, val_ann = _coco_paths(config, out_dir)
        train = vdata.CocoSemantic(train_images, train_ann, vdata.segmentation_transforms(True, size),
                                   categories=config.categories)
        val = vdata.CocoSemantic(val_images, val_ann, vdata.segmentation_transforms(False, size),
                                 categories=config.categories)
    elif config.format == "mask_folder":
        root = Path(config.root or ".")
        need = [n for n in ("train_images", "train_annotations", "val_images", "val_annotations")
                if getattr(config, n) is None]
        if need:
            raise ConfigError("data.format='mask_folder' needs train_images/val_images (image folders) and "
                              "train_annotations/val_annotations (mask folders)", path="data")
        train = vdata.MaskFolderSegmentation(root / config.train_images, root / config.train_annotations,
                                             vdata.segmentation_transforms(True, size))
        val = vdata.MaskFolderSegmentation(root / config.val_images, root / config.val_annotations,
                                           vdata.segmentation_transforms(False, size))
    else:
        raise ConfigError(f"task 'semantic' reads 'shapes', 'coco' or 'mask_folder' data, got "
                          f"{config.format!r}", path="data.format")
    names = _category_names(train)
    return DataBundle(train, val, len(names) + 1, ["background", *names])


def classification_data(config: DataConfig, out_dir: Path) -> DataBundle:
    """One sub-folder per class (torchvision's ImageFolder layout) for each split."""
    from .. import data as vdata

    if config.format != "image_folder":
        raise ConfigError(f"task 'classification' reads data.format='image_folder' (class sub-folders), got "
                          f"{config.format!r}", path="data.format")
    if config.train_images is None or config.val_images is None:
        raise ConfigError("data.format='image_folder' needs data.train_images and data.val_images "
                          "(folders with one sub-folder per class)", path="data")
    root = Path(config.root or ".")
    train = vdata.ImageFolderClassification(root / config.train_images,
                                            vdata.classification_transforms(True, config.size))
    val = vdata.ImageFolderClassification(root / config.val_images,
                                          vdata.classification_transforms(False, config.size))
    names = list(getattr(train, "classes", []))
    if getattr(val, "classes", names) != names:
        raise DataError(f"train classes {names} differ from val classes {list(val.classes)}; "
                        f"both folders need the same class sub-folders")
    return DataBundle(train, val, len(names), names)


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
