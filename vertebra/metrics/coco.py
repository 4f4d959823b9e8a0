"""COCO box and mask AP through pycocotools' ``COCOeval``, fed straight from model outputs.

Predictions arrive as torchvision's detection models return them (XYXY boxes, scores, contiguous
labels ``1..K``, mask probabilities at image size); :class:`CocoEvaluator` converts them to COCO
result records (XYWH boxes, COCO category ids, RLE masks) as they come in, so the state it keeps
is plain Python data: a dict of lists of dicts, cheap to pickle and to ``all_gather_object``
across DDP ranks.  Images repeated by a ``DistributedSampler``'s padding are counted once.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..errors import ConfigError, InputError

__all__ = ["CocoEvaluator", "COCO_STAT_NAMES"]

#: Names of ``COCOeval.stats`` in order; segm keys get a ``segm_`` prefix.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_IOU_TYPES = ("bbox", "segm")


class CocoEvaluator:
    """Accumulate detections over a data set, then score them with ``COCOeval``.

    Args:
        coco_gt: ground truth, a pycocotools ``COCO`` (e.g. ``CocoDetection(...).coco``) or the path
            of an instances JSON.
        iou_types: ``("bbox",)``, ``("segm",)`` or ``("bbox", "segm")``.
        label_to_category_id: maps the model's labels back to COCO category ids; by default the
            categories sorted by id are labels ``1..K``, the same rule as
            :class:`vertebra.data.CocoDetection`.

    Usage::

        evaluator = CocoEvaluator(dataset.coco, ("bbox", "segm"))
        for images, targets in loader:
            outputs = model(images)
            evaluator.update({t["image_id"]: o for t, o in zip(targets, outputs)})
        evaluator.synchronize()          # no-op unless torch.distributed is initialised
        evaluator.compute()              # {"AP": ..., "AP50": ..., "segm_AP": ..., ...}

    Values are in ``[0, 1]``; ``-1.0`` (pycocotools' convention) where the evaluated images hold no
    ground truth for that statistic (e.g. ``APs`` without small objects).
    """

    def __init__(self, coco_gt: COCO | str | os.PathLike[str], iou_types: Iterable[str] = ("bbox",), *,
                 label_to_category_id: Mapping[int, int] | None = None):
        if not isinstance(coco_gt, COCO):
            from ..data._cocofile import load_coco  # validates and gives a clear DataError

            coco_gt = load_coco(coco_gt)
        self.coco_gt = coco_gt
        self.iou_types = tuple(iou_types) if not isinstance(iou_types, str) else (iou_types,)
        bad = [t for t in self.iou_types if t not in _IOU_TYPES]
        if bad or not self.iou_types or len(set(self.iou_types)) != len(self.iou_types):
            raise ConfigError(f"iou_types must be a non-empty selection of {_IOU_TYPES} without repeats, "
                              f"got {self.iou_types!r}")
        #: the ground truth mask AP is scored against (see :func:`_maskable_ground_truth`)
        self.segm_gt = _maskable_ground_truth(coco_gt) if "segm" in self.iou_types else coco_gt
        if label_to_category_id is None:
            label_to_category_id = {i + 1: cid for i, cid in enumerate(sorted(coco_gt.cats))}
        unknown = sorted(set(label_to_category_id.values()) - set(coco_gt.cats))
        if unknown:
            raise ConfigError(f"label_to_category_id maps to category ids {unknown} that the ground "
                              f"truth does not have (it has {sorted(coco_gt.cats)})")
        self.label_to_category_id = {int(k): int(v) for k, v in label_to_category_id.items()}
        #: image id -> COCO result records; plain data, see :meth:`state` / :meth:`merge`.
        self.predictions: dict[int, list[dict[str, Any]]] = {}
        #: pycocotools' printed summary per iou type, filled by :meth:`compute`.
        self.summaries: dict[str, str] = {}

    # -- accumulate -----------------------------------------------------------------------------

    def update(self, predictions: Mapping[Any, Mapping[str, Any]]) -> None:
        """Add ``{image_id: {"boxes", "scores", "labels"[, "masks"]}}`` for some images.

        ``boxes`` (N, 4) XYXY in the original image's pixels; ``labels`` contiguous; ``masks``
        (N, H, W) or (N, 1, H, W) at image size, probabilities (thresholded at 0.5) or binary;
        needed when evaluating ``"segm"``.  Tensors (any device) or arrays.  An image seen again
        replaces its earlier records.
        """
        for image_id, prediction in predictions.items():
            image_id = int(image_id)
            if image_id not in self.coco_gt.imgs:
                raise InputError(f"prediction for image id {image_id}, which is not in the ground truth; "
                                 f"key predictions by target['image_id']")
            self.predictions[image_id] = self._records(image_id, prediction)

    def _records(self, image_id: int, prediction: Mapping[str, Any]) -> list[dict[str, Any]]:
        where = f"prediction for image id {image_id}"
        missing = [k for k in ("boxes", "scores", "labels") if k not in prediction]
        if "segm" in self.iou_types and "masks" not in prediction:
            missing.append("masks")
        if missing:
            raise InputError(f"{where} lacks {missing}; expected the dict a torchvision detection model returns")
        boxes = _numpy(prediction["boxes"], np.float64).reshape(-1, 4)
        scores = _numpy(prediction["scores"], np.float64).reshape(-1)
        labels = _numpy(prediction["labels"], np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise InputError(f"{where}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels; "
                             f"they must have the same length")
        unknown = sorted(set(labels.tolist()) - set(self.label_to_category_id))
        if unknown:
            raise InputError(f"{where}: labels {unknown} have no COCO category (known labels "
                             f"{sorted(self.label_to_category_id)}); is num_classes right for this data set?")
        records = []
        for box, score, label in zip(boxes, scores, labels):
            x0, y0, x1, y1 = (float(v) for v in box)
            records.append({"image_id": image_id, "category_id": self.label_to_category_id[int(label)],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
        if "segm" in self.iou_types:
            for record, rle in zip(records, self._encode_masks(image_id, prediction["masks"], len(records))):
                record["segmentation"] = rle
        return records

    def _encode_masks(self, image_id: int, masks: Any, count: int) -> list[dict[str, Any]]:
        array = _numpy(masks, None)
        record = self.coco_gt.imgs[image_id]
        size = (record["height"], record["width"])
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3 or array.shape[0] != count or tuple(array.shape[1:]) != size:
            raise InputError(f"prediction for image id {image_id}: masks of shape {tuple(array.shape)}; expected "
                             f"({count}, {size[0]}, {size[1]}) or ({count}, 1, {size[0]}, {size[1]}): one mask "
                             f"per box at the original image size")
        binary = array > 0.5 if array.dtype.kind == "f" else array > 0
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
        for rle in rles:  # str, not bytes: JSON- and pickle-friendly everywhere
            rle["counts"] = rle["counts"].decode("ascii")
        return list(rles)

    # -- distributed ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The accumulated state as plain data (what ranks exchange)."""
        return {"predictions": self.predictions}

    def merge(self, states: Iterable[Mapping[str, Any]]) -> None:
        """Fold in other evaluators' :meth:`state`; an image present twice is kept once."""
        for state in states:
            for image_id, records in state["predictions"].items():
                self.predictions.setdefault(int(image_id), records)

    def synchronize(self) -> None:
        """Gather every rank's predictions onto every rank (``all_gather_object``); no-op without DDP."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, self.state())
        self.merge(gathered)

    def reset(self) -> None:
        self.predictions = {}
        self.summaries = {}

    # -- score ----------------------------------------------------------------------------------

    def compute(self) -> dict[str, float]:
        """Run ``COCOeval`` over the images seen so far (all ground-truth images if none were).

        Returns ``{"AP", "AP50", "AP75", "APs", ..., "AR100", ...}`` for ``bbox`` and the same keys
        prefixed ``segm_`` for ``segm``.  No predictions at all scores 0, not an exception.
        """
        image_ids = sorted(self.predictions) or sorted(self.coco_gt.imgs)
        results: dict[str, float] = {}
        for iou_type in self.iou_types:
            ground_truth = self.segm_gt if iou_type == "segm" else self.coco_gt
            evaluator = COCOeval(ground_truth, self._detections(iou_type), iou_type)
            evaluator.params.imgIds = image_ids
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
            self.summaries[iou_type] = printed.getvalue()
            prefix = "" if iou_type == "bbox" else f"{iou_type}_"
            results.update({prefix + name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)})
        return results

    def _detections(self, iou_type: str) -> COCO:
        """A results ``COCO`` like ``coco_gt.loadRes`` builds, but one that also accepts zero detections."""
        annotations = []
        for image_id in sorted(self.predictions):
            for record in self.predictions[image_id]:
                ann = {k: record[k] for k in ("image_id", "category_id", "score")}
                if iou_type == "bbox":
                    ann["bbox"] = list(record["bbox"])
                    ann["area"] = record["bbox"][2] * record["bbox"][3]
                else:
                    ann["segmentation"] = record["segmentation"]
                    ann["area"] = float(mask_utils.area(record["segmentation"]))
                    ann["bbox"] = mask_utils.toBbox(record["segmentation"]).tolist()
                ann["id"], ann["iscrowd"] = len(annotations) + 1, 0
                annotations.append(ann)
        detections = COCO()
        detections.dataset = {"images": list(self.coco_gt.dataset["images"]),
                              "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
                              "annotations": annotations}
        with contextlib.redirect_stdout(io.StringIO()):
            detections.createIndex()
        return detections


def _maskable_ground_truth(coco_gt: COCO) -> COCO:
    """``coco_gt`` without the annotations that have no mask to score against, with a warning.

    The data sets skip an annotation whose segmentation is missing, empty or a polygon of fewer
    than three points (the model never sees it as an instance); pycocotools' mask IoU would
    instead crash on it, after a whole epoch of training.  Scoring mask AP without those
    annotations keeps evaluation consistent with what was trained.
    """
    from ..data._cocofile import polygon_problem

    unusable = sorted(ann["id"] for ann in coco_gt.dataset.get("annotations", [])
                      if polygon_problem(ann.get("segmentation")) is not None)
    if not unusable:
        return coco_gt
    warnings.warn(f"mask AP leaves out {len(unusable)} ground-truth annotation(s) without a usable "
                  f"segmentation (ids {unusable[:10]}{' ...' if len(unusable) > 10 else ''}); box AP keeps them",
                  stacklevel=3)
    kept = set(unusable)
    usable = COCO()
    usable.dataset = {**coco_gt.dataset,
                      "annotations": [a for a in coco_gt.dataset["annotations"] if a["id"] not in kept]}
    with contextlib.redirect_stdout(io.StringIO()):
        usable.createIndex()
    return usable


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
        value = value.numpy()
    array = np.asarray(value)
    return array.astype(dtype, copy=False) if dtype is not None else array
