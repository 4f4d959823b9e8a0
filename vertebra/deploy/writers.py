"""Result files of ``vertebra predict``: one writer per task, each a row of :data:`WRITERS`.

- detection / instance: ``results.json``, a COCO *results* list (``image_id``, ``file_name``,
  ``category_id`` and ``category_name``, ``bbox`` ``[x, y, w, h]``, ``score``; instance also
  ``segmentation`` as compressed RLE), which ``COCO.loadRes`` reads as it is; and ``images.json``,
  the COCO ``images`` and ``categories`` of the run, so the ids can be matched to a ground-truth
  file by ``file_name``.  Category ids are the training data's COCO ids when the artifact recorded
  them (training on COCO-format data does), else the label indices.
- semantic: ``masks/<name>.png``, a palette PNG of class indices (255: not seen by the model), and
  ``areas.json``, per image the pixels and fraction of each class present.
- classification: ``topk.json`` and ``topk.csv``, the top-k classes and probabilities per image.

Every run also writes ``summary.json`` (counts, files, the images that could not be read, by name,
and with ground truth the images it was and was not drawn on) and, unless turned off,
``overlays/<name>.png``.  Files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..atomic import atomic_open
from .images import ImageFailure
from .overlay import draw_overlay, label_name, palette

if TYPE_CHECKING:  # pragma: no cover
    from .predict import Prediction, Predictor
    from .truth import GroundTruth

__all__ = ["Writer", "DetectionWriter", "SemanticWriter", "ClassificationWriter", "WRITERS", "make_writer"]


def _write_json(path: Path, data: Any, *, compact: bool = False) -> None:
    """``compact``: one line, for files with one record per prediction (thousands of boxes)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, **({"separators": (",", ":")} if compact else {"indent": 1}))
        handle.write("\n")


def _png(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


class Writer:
    """Collects a run's predictions and failures; :meth:`close` writes the files and the summary."""

    def __init__(self, predictor: "Predictor", out: Path, *, overlays: bool = True,
                 ground_truth: "GroundTruth | None" = None):
        self.predictor, self.out, self.overlays, self.ground_truth = predictor, out, overlays, ground_truth
        self.count, self.failures, self.files = 0, [], []
        self._used: set[str] = set()

    def add(self, item: "Prediction | ImageFailure") -> None:
        if isinstance(item, ImageFailure):
            self.failures.append({"file_name": item.name, "reason": item.reason})
            return
        self.count += 1
        self.write(item)
        if self.overlays and item.image is not None:
            truth = self.ground_truth.lookup(item.name, item.size, item.path) if self.ground_truth else None
            picture = draw_overlay(item, self.predictor, truth)
            _png(self.out / "overlays" / self.output_name(item.name, "overlays"), picture)

    def output_name(self, name: str, folder: str) -> str:
        """``name`` with a ``.png`` suffix, unique in ``folder`` (``a.jpg`` and ``a.png`` both predicted:
        the second keeps its suffix, ``a.png.png``)."""
        candidate = Path(name).with_suffix(".png").as_posix()
        if f"{folder}/{candidate}" in self._used:
            candidate = f"{name}.png"
        self._used.add(f"{folder}/{candidate}")
        return candidate

    def write(self, prediction: "Prediction") -> None:
        raise NotImplementedError

    def finish(self) -> list[str]:
        """Write the collected result files; returns their names relative to the output folder."""
        return []

    def close(self) -> dict[str, Any]:
        files = self.finish()
        predictor = self.predictor
        summary = {"task": predictor.task, "runtime": predictor.runtime, "threshold": predictor.threshold,
                   "images": self.count + len(self.failures), "predicted": self.count,
                   "failed": len(self.failures), "failures": self.failures, "files": files,
                   "overlays": "overlays/" if self.overlays and self.count else None,
                   "ground_truth": self.ground_truth.report() if self.ground_truth else None}
        _write_json(self.out / "summary.json", summary)
        return summary


class DetectionWriter(Writer):
    """COCO results (boxes, and RLE masks for instance) plus the run's images and categories."""

    def __init__(self, predictor: "Predictor", out: Path, **options: Any):
        super().__init__(predictor, out, **options)
        names = predictor.class_names
        recorded = predictor.artifact.category_ids   # the training data's COCO ids, when it had them
        self.category_ids = [recorded[i] if recorded is not None and recorded[i] is not None else i
                             for i in range(len(names))]
        self.results: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def write(self, prediction: "Prediction") -> None:
        image_id = len(self.images) + 1
        height, width = prediction.size
        self.images.append({"id": image_id, "file_name": prediction.name, "width": width, "height": height})
        output, names = prediction.output, self.predictor.class_names
        rles = _rles(output["masks"]) if "masks" in output else None
        for index, (box, score, label) in enumerate(zip(output["boxes"].tolist(), output["scores"].tolist(),
                                                        output["labels"].tolist())):
            x0, y0, x1, y1 = box
            result = {"image_id": image_id, "file_name": prediction.name,
                      "category_id": self.category_ids[label] if 0 <= label < len(names) else label,
                      "category_name": label_name(names, label),
                      "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                      "score": round(score, 5)}
            if rles is not None:
                result["segmentation"] = rles[index]
            self.results.append(result)

    def finish(self) -> list[str]:
        names = self.predictor.class_names
        categories = [{"id": self.category_ids[i], "name": names[i]} for i in range(1, len(names))]
        _write_json(self.out / "results.json", self.results, compact=True)
        _write_json(self.out / "images.json", {"images": self.images, "categories": categories}, compact=True)
        return ["results.json", "images.json"]


def _rles(masks: Any) -> list[dict[str, Any]]:
    """(K, H, W) bool -> COCO compressed RLEs with JSON-ready ``counts``."""
    from pycocotools import mask as mask_utils

    if masks.shape[0] == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    return [{"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")} for rle in encoded]


class SemanticWriter(Writer):
    """A palette PNG of class indices per image, and the class areas of every image."""

    def __init__(self, predictor: "Predictor", out: Path, **options: Any):
        super().__init__(predictor, out, **options)
        self.areas: list[dict[str, Any]] = []
        colours = palette(len(predictor.class_names))
        flat = [channel for colour in colours for channel in colour]
        self.palette = (flat + [0] * (768 - len(flat)))[:765] + [255, 255, 255]   # 255 (unknown): white

    def write(self, prediction: "Prediction") -> None:
        mask = prediction.output["mask"].numpy()
        image = Image.fromarray(mask, mode="P")
        image.putpalette(self.palette)
        _png(self.out / "masks" / self.output_name(prediction.name, "masks"), image)
        counts = np.bincount(mask.reshape(-1), minlength=256)
        names, total = self.predictor.class_names, mask.size
        areas = {(names[index] if index < len(names) else ("unknown" if index == 255 else str(index))):
                 {"pixels": int(count), "fraction": round(int(count) / total, 6)}
                 for index, count in enumerate(counts.tolist()) if count}
        height, width = prediction.size
        self.areas.append({"file_name": prediction.name, "width": width, "height": height, "areas": areas})

    def finish(self) -> list[str]:
        _write_json(self.out / "areas.json", self.areas, compact=True)
        return ["areas.json", "masks/"]


class ClassificationWriter(Writer):
    """The top-k classes and their probabilities per image, as JSON and CSV."""

    def __init__(self, predictor: "Predictor", out: Path, **options: Any):
        super().__init__(predictor, out, **options)
        self.rows: list[dict[str, Any]] = []

    def write(self, prediction: "Prediction") -> None:
        names = self.predictor.class_names
        top = [{"rank": rank + 1, "class_id": label, "class_name": label_name(names, label), "score": round(score, 6)}
               for rank, (label, score) in enumerate(zip(prediction.output["labels"].tolist(),
                                                         prediction.output["scores"].tolist()))]
        self.rows.append({"file_name": prediction.name, "top_k": top})

    def finish(self) -> list[str]:
        _write_json(self.out / "topk.json", self.rows, compact=True)
        with atomic_open(self.out / "topk.csv", "w", encoding="utf-8", newline="") as handle:
            table = csv.writer(handle)
            table.writerow(["file_name", "rank", "class_id", "class_name", "score"])
            for row in self.rows:
                for entry in row["top_k"]:
                    table.writerow([row["file_name"], entry["rank"], entry["class_id"], entry["class_name"],
                                    entry["score"]])
        return ["topk.json", "topk.csv"]


WRITERS: dict[str, type[Writer]] = {"detection": DetectionWriter, "instance": DetectionWriter,
                                    "semantic": SemanticWriter, "classification": ClassificationWriter}


def make_writer(predictor: "Predictor", out: Path, *, overlays: bool = True,
                ground_truth: "GroundTruth | None" = None) -> Writer:
    return WRITERS[predictor.task](predictor, out, overlays=overlays, ground_truth=ground_truth)
