"""The task table: per task name, which data reader, which loss, which metric, how to draw a prediction.

The training loop (``loop.py``) is task-agnostic; everything that differs between detection,
instance segmentation, semantic segmentation and classification is one row of :data:`TASKS`
(a :class:`TaskSpec`), looked up by name with :func:`task_spec`.  Each row's adapter answers four
questions:

* ``loss(model, batch)`` -> (total loss, named components, number of images),
* ``eval_update(model, batch)`` feeds predictions to a metric state,
* ``eval_compute()`` reduces that state across ranks and returns ``{metric: value}``,
* ``draw(model, batch)`` -> uint8 images with predictions drawn on them.

Models follow torchvision's conventions: detection models take ``(images, targets)`` and return a
loss dict in train mode and a list of ``{"boxes", "scores", "labels"[, "masks"]}`` in eval mode;
segmentation models return ``{"out": logits[, "aux": logits]}``; classifiers return logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_choice
from ..weights.artifact import Preprocessing
from .config import DataConfig
from .data import DataBundle, classification_data, instances_data, prepare_shapes, semantic_data
from .distributed import all_reduce_sum

__all__ = ["Task", "DetectionTask", "InstanceTask", "SemanticTask", "ClassificationTask", "TaskSpec",
           "TASKS", "task_spec"]


# -- adapters ----------------------------------------------------------------------------------

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
    """torchvision-style detectors (Faster R-CNN, RetinaNet, FCOS, SSDlite: a loss dict in train(), boxes in
    eval()): COCO box AP via pycocotools."""

    name = "detection"
    masks = False

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


class InstanceTask(DetectionTask):
    """Mask R-CNN style models: COCO box and mask (segm) AP."""

    name = "instance"
    masks = True


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
        mix = self.bundle.extra.get("mix")              # data.augment mixup / cutmix -> soft labels
        if mix is not None:
            images, labels = mix(images, labels)
        logits = model(self._images(images))
        loss = F.cross_entropy(logits, labels.to(self.device),
                               label_smoothing=self.bundle.extra.get("label_smoothing", 0.0))
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


# -- what the artifact records as preprocessing: each the evaluation transform of vertebra.data.transforms --

def _detection_preprocessing(data: DataConfig) -> Preprocessing:
    """Validation images keep their size and are not normalised: the detector resizes and normalises."""
    return Preprocessing("none")


def _semantic_preprocessing(data: DataConfig) -> Preprocessing:
    """``segmentation_transforms(False, size)``: size x size (or native), ImageNet-normalised."""
    from ..data import IMAGENET_MEAN, IMAGENET_STD

    resize = "none" if data.size is None else "square"
    return Preprocessing(resize, data.size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _classification_preprocessing(data: DataConfig) -> Preprocessing:
    """``classification_transforms(False, size)``: shorter side to size / 0.875, centre crop, normalised."""
    from ..data import IMAGENET_MEAN, IMAGENET_STD

    size = int(data.size)  # classification_data refuses size=None before an artifact is written
    return Preprocessing("shorter_crop", int(round(size / 0.875)), size, IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class TaskSpec:
    """One row of the task table: the adapter class, the data it reads, and how inference must
    preprocess images (recorded in the model artifact, so predicting needs no training config)."""

    name: str
    adapter: type[Task]
    read: Callable[[DataConfig, Path], DataBundle]   # the two splits from the data section
    formats: tuple[str, ...]                          # data.format values ``read`` accepts
    preprocessing: Callable[[DataConfig], Preprocessing]   # the evaluation transform, as data
    primary_metric: str = "AP"                        # what best.pth keeps the best of (higher is better)

    def prepare_data(self, config: DataConfig, out_dir: Path) -> None:
        """Generate the built-in shapes set when the config asks for it and this task reads it."""
        if config.format == "shapes" and "shapes" in self.formats:
            prepare_shapes(config, out_dir)

    def build_data(self, config: DataConfig, out_dir: Path) -> DataBundle:
        """Both splits (call :meth:`prepare_data` first, on rank 0, for shapes)."""
        return self.read(config, out_dir)

    def make(self, bundle: DataBundle, device: torch.device, channels_last: bool = False) -> Task:
        return self.adapter(bundle, device, channels_last)


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("detection", DetectionTask, partial(instances_data, task="detection", masks=False),
             ("shapes", "coco"), _detection_preprocessing),
    TaskSpec("instance", InstanceTask, partial(instances_data, task="instance", masks=True), ("shapes", "coco"),
             _detection_preprocessing, primary_metric="segm_AP"),
    TaskSpec("semantic", SemanticTask, semantic_data, ("shapes", "coco", "mask_folder"), _semantic_preprocessing,
             primary_metric="mIoU"),
    TaskSpec("classification", ClassificationTask, classification_data, ("image_folder",),
             _classification_preprocessing, primary_metric="top1"),
)}


def task_spec(name: str) -> TaskSpec:
    """The table row of ``name``; an unknown name is a :class:`ConfigError` listing the valid ones."""
    return TASKS[check_choice(name, tuple(TASKS), "task")]
