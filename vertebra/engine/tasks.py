"""One adapter per task type: which data set, which loss, which metric, how to draw a prediction.

The training loop (``loop.py``) is task-agnostic; everything that differs between detection,
instance segmentation, semantic segmentation and classification lives here, behind four methods:

* ``loss(model, batch)`` -> (total loss, named components, number of images),
* ``eval_update(model, batch)`` feeds predictions to a metric state,
* ``eval_compute()`` reduces that state across ranks and returns ``{metric: value}``,
* ``draw(model, batch)`` -> uint8 images with predictions drawn on them.

Models follow torchvision's conventions: detection models take ``(images, targets)`` and return a
loss dict in train mode and a list of ``{"boxes", "scores", "labels"[, "masks"]}`` in eval mode;
segmentation models return ``{"out": logits[, "aux": logits]}``; classifiers return logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from .config import DataConfig
from .distributed import all_reduce_sum

__all__ = ["DataBundle", "prepare_data", "build_data", "make_task", "Task"]


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


# -- data --------------------------------------------------------------------------------------

def _shapes_root(config: DataConfig, out_dir: Path) -> Path:
    return Path(config.root) if config.root else out_dir / "data"


def prepare_data(task: str, config: DataConfig, out_dir: Path) -> None:
    """Generate the built-in shapes set when the config asks for it (rank 0 only, before build_data).

    A set already on disk with the same seed, image size and counts is reused (the generator is
    deterministic, so regenerating would write the same bytes).
    """
    if config.format == "shapes" and task != "classification":
        from ..data import generate_shapes

        root = _shapes_root(config, out_dir)
        if not _shapes_present(root, config):
            generate_shapes(root, num_train=config.num_train, num_val=config.num_val,
                            image_size=config.image_size, seed=config.shapes_seed)


def _shapes_present(root: Path, config: DataConfig) -> bool:
    import json

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


def build_data(task: str, config: DataConfig, out_dir: Path) -> DataBundle:
    """Both splits for ``task`` from the data section (call :func:`prepare_data` first for shapes)."""
    from .. import data as vdata

    size = config.size
    if task in ("detection", "instance"):
        if config.format not in ("shapes", "coco"):
            raise ConfigError(f"task {task!r} reads COCO instances; data.format must be 'shapes' or 'coco', "
                              f"got {config.format!r}", path="data.format")
        train_images, train_ann, val_images, val_ann = _coco_paths(config, out_dir)
        masks = task == "instance"
        # Detection models resize internally (GeneralizedRCNNTransform), so validation images keep
        # their size: predictions then come back in the original coordinates COCOeval expects.
        train = vdata.CocoDetection(train_images, train_ann, vdata.detection_transforms(True, size), with_masks=masks)
        val = vdata.CocoDetection(val_images, val_ann, vdata.detection_transforms(False, None), with_masks=masks)
        names = _category_names(train)
        return DataBundle(train, val, len(names) + 1, ["background", *names], vdata.collate_detection,
                          coco_gt=_coco_of(val))
    if task == "semantic":
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
    if config.format != "image_folder":
        raise ConfigError(f"task 'classification' reads data.format='image_folder' (class sub-folders), got "
                          f"{config.format!r}", path="data.format")
    if config.train_images is None or config.val_images is None:
        raise ConfigError("data.format='image_folder' needs data.train_images and data.val_images "
                          "(folders with one sub-folder per class)", path="data")
    root = Path(config.root or ".")
    train = vdata.ImageFolderClassification(root / config.train_images, vdata.classification_transforms(True, size))
    val = vdata.ImageFolderClassification(root / config.val_images, vdata.classification_transforms(False, size))
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


# -- tasks -------------------------------------------------------------------------------------

class Task:
    """Base adapter; see the module docstring."""

    name = ""

    def __init__(self, bundle: DataBundle, device: torch.device, channels_last: bool = False):
        self.bundle, self.device, self.channels_last = bundle, device, channels_last

    def _images(self, images: Tensor) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, dict[str, Tensor], int]:
        raise NotImplementedError

    def eval_reset(self) -> None:
        raise NotImplementedError

    def eval_update(self, model: nn.Module, batch: Any) -> None:
        raise NotImplementedError

    def eval_compute(self) -> dict[str, float]:
        raise NotImplementedError

    def draw(self, model: nn.Module, batch: Any, limit: int) -> list[Tensor]:
        raise NotImplementedError


class DetectionTask(Task):
    """Faster / Mask R-CNN style models: COCO AP via pycocotools (bbox, and segm for ``instance``)."""

    name = "detection"

    def __init__(self, bundle: DataBundle, device: torch.device, channels_last: bool = False,
                 masks: bool = False):
        super().__init__(bundle, device, channels_last)
        self.masks = masks
        self.name = "instance" if masks else "detection"

    def _move(self, batch: Any) -> tuple[list[Tensor], list[dict]]:
        images, targets = batch
        images = [image.to(self.device, non_blocking=True) for image in images]
        moved = []
        for target in targets:
            item = {}
            for key, value in target.items():
                item[key] = value.as_subclass(Tensor).to(self.device) if isinstance(value, Tensor) else value
            moved.append(item)
        return images, moved

    def loss(self, model, batch):
        images, targets = self._move(batch)
        losses = model(images, targets)
        total = sum(losses.values())
        return total, {f"loss_{k.removeprefix('loss_')}": v.detach() for k, v in losses.items()}, len(images)

    def eval_reset(self) -> None:
        from ..metrics import CocoEvaluator

        dataset = self.bundle.val
        self._evaluator = CocoEvaluator(self.bundle.coco_gt, ("bbox", "segm") if self.masks else ("bbox",),
                                        label_to_category_id=getattr(dataset, "label_to_category_id", None))

    @torch.no_grad()
    def _predict(self, model, batch):
        images, targets = self._move(batch)
        outputs = model(images)
        return images, targets, outputs

    def eval_update(self, model, batch) -> None:
        _, targets, outputs = self._predict(model, batch)
        predictions = {}
        for target, output in zip(targets, outputs):
            item = {k: output[k].detach().float().cpu() for k in ("boxes", "scores", "labels")}
            item["labels"] = item["labels"].long()
            if self.masks:     # (N, 1, H, W) probabilities -> binary, as COCO's segm evaluation wants
                item["masks"] = (output["masks"] > 0.5).to(torch.uint8).cpu()
            predictions[int(target["image_id"])] = item
        self._evaluator.update(predictions)

    def eval_compute(self) -> dict[str, float]:
        self._evaluator.synchronize()        # every rank's predictions, gathered as plain data
        return self._evaluator.compute()

    def draw(self, model, batch, limit):
        from .draw import detection_panel, to_uint8

        images, targets, outputs = self._predict(model, batch)
        return [detection_panel(to_uint8(image), output, target, self.bundle.class_names, self.masks)
                for image, target, output in list(zip(images, targets, outputs))[:limit]]


class SemanticTask(Task):
    """``{"out": logits[, "aux"]}`` models: cross entropy (ignore 255, aux weight 0.5); mIoU, pixel accuracy."""

    name = "semantic"
    aux_weight = 0.5

    def loss(self, model, batch):
        images, masks = batch
        images, masks = self._images(images), masks.to(self.device).long()
        outputs = model(images)
        parts = {"loss_out": F.cross_entropy(outputs["out"], masks, ignore_index=255)}
        if "aux" in outputs and outputs["aux"] is not None:
            parts["loss_aux"] = self.aux_weight * F.cross_entropy(outputs["aux"], masks, ignore_index=255)
        total = sum(parts.values())
        return total, {k: v.detach() for k, v in parts.items()}, images.shape[0]

    def eval_reset(self) -> None:
        from ..metrics import SegmentationMetric

        self._metric = SegmentationMetric(self.bundle.num_classes, ignore_index=255)

    def eval_update(self, model, batch) -> None:
        images, masks = batch
        with torch.no_grad():
            logits = model(self._images(images))["out"]
        self._metric.update(logits.argmax(1).cpu(), masks.long())

    def eval_compute(self) -> dict[str, float]:
        all_reduce_sum(self._metric.confusion)        # one (C, C) matrix: exact over all ranks
        result = self._metric.compute()
        return {k: float(v) for k, v in result.items() if isinstance(v, (int, float))}

    def draw(self, model, batch, limit):
        from ..data import IMAGENET_MEAN, IMAGENET_STD
        from .draw import semantic_panel, to_uint8

        images, masks = batch
        images, masks = images[:limit], masks[:limit]
        with torch.no_grad():
            predicted = model(self._images(images))["out"].argmax(1).cpu()
        return [semantic_panel(to_uint8(image, IMAGENET_MEAN, IMAGENET_STD), guess, mask)
                for image, guess, mask in zip(images, predicted, masks)]


class ClassificationTask(Task):
    """Logits models: cross entropy; top-1 / top-5 accuracy (top-5 only with >= 5 classes)."""

    name = "classification"

    def loss(self, model, batch):
        images, labels = batch
        logits = model(self._images(images))
        loss = F.cross_entropy(logits, labels.to(self.device))
        return loss, {"loss_ce": loss.detach()}, images.shape[0]

    def eval_reset(self) -> None:
        from ..metrics.classification import TopKAccuracy

        self._metric = TopKAccuracy(ks=(1, 5) if self.bundle.num_classes >= 5 else (1,))

    def eval_update(self, model, batch) -> None:
        images, labels = batch
        with torch.no_grad():
            logits = model(self._images(images)).float().cpu()
        self._metric.update(logits, labels)

    def eval_compute(self) -> dict[str, float]:
        all_reduce_sum(self._metric.counts)
        return self._metric.compute()

    def draw(self, model, batch, limit):
        from ..data import IMAGENET_MEAN, IMAGENET_STD
        from .draw import classification_panel, to_uint8

        images, labels = batch
        images = images[:limit]
        with torch.no_grad():
            predicted = model(self._images(images)).argmax(1).cpu().tolist()
        return [classification_panel(to_uint8(image, IMAGENET_MEAN, IMAGENET_STD), guess, label,
                                     self.bundle.class_names)
                for image, guess, label in zip(images, predicted, labels.tolist())]


def make_task(task: str, bundle: DataBundle, device: torch.device, channels_last: bool = False) -> Task:
    if task in ("detection", "instance"):
        return DetectionTask(bundle, device, channels_last, masks=task == "instance")
    if task == "semantic":
        return SemanticTask(bundle, device, channels_last)
    return ClassificationTask(bundle, device, channels_last)
