"""The :class:`Predictor`: images in, predictions in each original image's frame out, for every task.

One path for every runtime: decode (:mod:`.images`), preprocess as training evaluated
(:mod:`.preprocess`), run a *runner* on a batch, map the outputs back.  A runner is any callable
``runner(batch) -> outputs`` taking a preprocessed float32 ``[N, 3, H, W]`` batch and returning the
eager eval model's output structure (classification logits ``[N, C]``; semantic ``{"out": [N, C, H,
W]}``; detection a list of ``{"boxes", "scores", "labels"[, "masks"]}``).  For ``runtime="torch"``
it is the model itself; ONNX Runtime and OpenVINO runners come from :mod:`.runtimes` (imported only
when asked for, as those packages are an optional extra).

Batches are runs of consecutive images with the same input size (after preprocessing), at most
``batch_size`` long: fixed-size preprocessing batches fully, detectors (which take any size) batch
what happens to match and otherwise run image by image.  Either way each image's result is the one
it would get alone.  What differs by task is a row of :data:`POSTPROCESS`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from ..errors import ConfigError, DataError, MissingExtraError
from ..validation import check_choice, check_positive_int
from ..weights.artifact import Artifact
from .embedded import embedded_runner, embedded_runtime
from .export import INSTALL_HINT
from .images import ImageFailure, ImageSource, find_images, load_image
from .model import load_model, model_artifact
from .preprocess import Geometry, boxes_to_original, dense_to_original, preprocess, unseen

__all__ = ["RUNTIMES", "POSTPROCESS", "Prediction", "PredictRun", "Predictor", "resolve_device"]

RUNTIMES = ("torch", "onnxruntime", "openvino")
_EXTRA_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
MASK_THRESHOLD = 0.5          # torchvision's: instance mask probabilities -> binary masks
UNKNOWN = 255                 # semantic pixels the model did not see (outside a centre crop)

Runner = Callable[[Tensor], Any]
ImageInput = str | os.PathLike[str] | Image.Image | Tensor


@dataclass
class Prediction:
    """One image's result, in its original (EXIF-oriented) pixel frame.

    ``output`` by task: detection ``boxes`` (K, 4) XYXY float, ``scores`` (K,), ``labels`` (K,) int64
    (indices into ``class_names``), instance also ``masks`` (K, H, W) bool; semantic ``mask`` (H, W)
    uint8 class indices (255: not seen by the model); classification ``labels`` / ``scores`` of the
    top k (probabilities, best first) and ``probabilities`` (C,).
    """

    name: str
    size: tuple[int, int]                  # (H, W)
    output: dict[str, Tensor]
    path: Path | None = None
    image: Tensor | None = field(default=None, repr=False)   # uint8 (3, H, W) when kept for overlays


@dataclass
class PredictRun:
    """What :meth:`Predictor.predict` returns: the predictions, and the images that could not be read."""

    predictions: list[Prediction]
    failures: list[ImageFailure]

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    def __len__(self) -> int:
        return len(self.predictions)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``; a clear error for anything else."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N", path="device") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for CUDA, which this machine does not have; use cpu",
                          path="device")
    return resolved


def check_threshold(threshold: float | None, task: str) -> float | None:
    """The score threshold: a number in [0, 1]; the task's default when None (semantic: always None)."""
    default = DEFAULT_THRESHOLD.get(task)
    if threshold is None:
        return default
    if default is None:
        raise ConfigError(f"a {task} model has no score threshold (each pixel takes its best class); "
                          "leave --threshold out", path="threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"must be a number in [0, 1], got {threshold!r}", path="threshold")
    return float(threshold)


# -- per task: split a batch's outputs into images, and finish one image ---------------------------

def _split_list(outputs: Any, count: int) -> list[Any]:
    return list(outputs)


def _split_semantic(outputs: Any, count: int) -> list[Any]:
    logits = outputs["out"] if isinstance(outputs, dict) else outputs
    return [logits[i:i + 1] for i in range(count)]


def _split_logits(outputs: Any, count: int) -> list[Any]:
    return [outputs[i] for i in range(count)]


def _finish_detection(output: dict[str, Tensor], geometry: Geometry, predictor: "Predictor") -> dict[str, Tensor]:
    scores = output["scores"].detach().float().cpu()
    keep = scores >= predictor.threshold
    result = {"boxes": boxes_to_original(output["boxes"].detach().cpu()[keep], geometry),
              "scores": scores[keep], "labels": output["labels"].detach().cpu()[keep].long()}
    if "masks" in output:
        masks = output["masks"].detach()[keep.to(output["masks"].device)]
        if masks.ndim == 3:
            masks = masks[:, None]
        result["masks"] = dense_to_original(masks, geometry)[:, 0] > MASK_THRESHOLD
    return result


def _finish_semantic(logits: Tensor, geometry: Geometry, predictor: "Predictor") -> dict[str, Tensor]:
    mask = dense_to_original(logits.detach(), geometry)[0].argmax(0).to(torch.uint8)
    outside = unseen(geometry)
    if outside is not None:
        mask[outside] = UNKNOWN
    return {"mask": mask}


def _finish_classification(logits: Tensor, geometry: Geometry, predictor: "Predictor") -> dict[str, Tensor]:
    probabilities = logits.detach().float().cpu().softmax(-1)
    scores, labels = probabilities.topk(min(predictor.top_k, probabilities.numel()))
    keep = scores >= predictor.threshold
    return {"labels": labels[keep], "scores": scores[keep], "probabilities": probabilities}


POSTPROCESS: dict[str, tuple[Callable[[Any, int], list[Any]], Callable[..., dict[str, Tensor]]]] = {
    "detection": (_split_list, _finish_detection),
    "instance": (_split_list, _finish_detection),
    "semantic": (_split_semantic, _finish_semantic),
    "classification": (_split_logits, _finish_classification),
}
DEFAULT_THRESHOLD: dict[str, float | None] = {"detection": 0.5, "instance": 0.5, "classification": 0.0,
                                              "semantic": None}


# -- the predictor ----------------------------------------------------------------------------------

class Predictor:
    """Predict with a model artifact (a path, a training output folder, or a model from ``load_model``).

    Args:
        model: the artifact, or a model carrying ``model.artifact`` (:func:`~vertebra.load_model`).
        runtime: ``torch`` (the model itself), ``onnxruntime`` or ``openvino`` (exported on first use
            into ``workdir``; needs ``pip install "vertebra[deploy]"``).  ``None`` (the default): the
            runtime of the graph an int8 artifact embeds, else ``torch``.
        device: where the torch runtime runs: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: images per model call, at most (see the module docstring).
        threshold: minimum score of a detection / of a top-k class; default 0.5 for detection and
            instance, 0 for classification; semantic models take none.
        top_k: classes reported per image (classification).
        progress: a progress bar; ``None`` shows one on a terminal for runs longer than one batch.
        workdir: where a non-torch runtime keeps its exported model (default: a temporary folder).
    """

    def __init__(self, model: str | os.PathLike[str] | nn.Module, *, runtime: str | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 8, threshold: float | None = None,
                 top_k: int = 5, progress: bool | None = None, workdir: str | os.PathLike[str] | None = None):
        if runtime is not None:
            check_choice(runtime, RUNTIMES, "runtime")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.top_k = check_positive_int(top_k, "top_k")
        if not isinstance(model, nn.Module):
            model = load_model(model)
        self.artifact: Artifact = model_artifact(model)
        self.runtime = embedded_runtime(self.artifact, runtime)
        if self.runtime != "torch" and str(device) not in ("cpu", "auto"):
            raise ConfigError(f"--runtime {self.runtime} runs on the CPU here; --device {device} applies to the "
                              "torch runtime only", path="device")
        self.device = resolve_device(device) if self.runtime == "torch" else torch.device("cpu")
        self.threshold = check_threshold(threshold, self.artifact.task)
        self.progress = progress
        self.model = model.to(self.device).eval()
        self.runner: Runner = self._runner(workdir)

    @property
    def task(self) -> str:
        return self.artifact.task

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.artifact.class_names

    def _runner(self, workdir: str | os.PathLike[str] | None) -> Runner:
        if self.runtime == "torch":
            return self.model
        if self.artifact.graph is not None:
            return embedded_runner(self.model, self.artifact)
        module = _EXTRA_MODULES[self.runtime]
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(f"--runtime {self.runtime} needs the {module!r} package, which is not "
                                    f"installed; install the deployment extra: {INSTALL_HINT}")
        from .runtimes import make_runner
        if workdir is None:
            import tempfile

            self._workdir = tempfile.TemporaryDirectory(prefix="vertebra-runtime-")
            workdir = self._workdir.name
        return make_runner(self.model, self.artifact, self.runtime, Path(workdir))

    # -- predicting ---------------------------------------------------------------------------
    def predict(self, images: ImageInput | Iterable[ImageInput]) -> PredictRun:
        """Predict ``images`` (files, folders, Pillow images or uint8 (3, H, W) tensors), in order."""
        predictions, failures = [], []
        for item in self.iter_predict(images):
            (failures if isinstance(item, ImageFailure) else predictions).append(item)
        return PredictRun(predictions, failures)

    def iter_predict(self, images: ImageInput | Iterable[ImageInput], *,
                     keep_images: bool = False) -> Iterator[Prediction | ImageFailure]:
        """Predictions (and failures) one image at a time, in input order: a folder of any size
        streams through with one batch in memory.  ``keep_images`` keeps each decoded image."""
        return self._predict_sources(_sources(images), keep_images)

    def _predict_sources(self, sources: list[ImageSource | _InMemory],
                         keep_images: bool) -> Iterator[Prediction | ImageFailure]:
        from tqdm.auto import tqdm

        show = self.progress if self.progress is not None else (
            len(sources) > self.batch_size and sys.stderr.isatty())
        with tqdm(total=len(sources), desc="predict", unit="img", disable=not show, leave=False) as bar:
            pending: list[tuple[Any, Tensor, Tensor, Geometry]] = []
            for source in sources:
                decoded = _decode(source)
                if isinstance(decoded, ImageFailure):
                    yield from self._flush(pending, keep_images)   # keep the input order
                    pending = []
                    bar.update(1)
                    yield decoded
                    continue
                tensor, geometry = preprocess(decoded, self.artifact.preprocessing)
                if pending and (len(pending) == self.batch_size or pending[0][2].shape != tensor.shape):
                    bar.update(len(pending))
                    yield from self._flush(pending, keep_images)
                    pending = []
                pending.append((source, decoded, tensor, geometry))
            bar.update(len(pending))
            yield from self._flush(pending, keep_images)

    @torch.no_grad()
    def _flush(self, pending: list[tuple[Any, Tensor, Tensor, Geometry]], keep: bool) -> Iterator[Prediction]:
        if not pending:
            return
        split, finish = POSTPROCESS[self.task]
        batch = torch.stack([tensor for _, _, tensor, _ in pending]).to(self.device)
        outputs = split(self.runner(batch), len(pending))
        for (source, image, _, geometry), output in zip(pending, outputs):
            yield Prediction(name=source.name, size=geometry.original, output=finish(output, geometry, self),
                             path=source.path, image=image if keep else None)

    def predict_to(self, out_dir: str | os.PathLike[str], images: ImageInput | Iterable[ImageInput], *,
                   overlays: bool = True, ground_truth: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Predict ``images`` and write the task's result files (and overlays) into ``out_dir``.

        ``ground_truth``: a COCO-format annotation file (the schema training reads) whose annotations
        the overlays also show, on the images it has a record for (matched by file name; see
        :mod:`.truth`).  It is read and checked before anything is written.

        Returns the run summary also written as ``out_dir/summary.json``: counts, the files
        written, every image that could not be read, by name, and where ground truth was drawn.
        """
        from .writers import make_writer

        truth = None
        if ground_truth is not None:
            if not overlays:
                raise ConfigError("ground truth is drawn on the overlays; drop --no-overlays (overlays=False) "
                                  "or --ground-truth", path="ground_truth")
            from .truth import GroundTruth

            truth = GroundTruth(ground_truth, masks=self.task == "semantic")
        sources = _sources(images)      # a missing path fails here, before out_dir exists
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        writer = make_writer(self, out, overlays=overlays, ground_truth=truth)
        for item in self._predict_sources(sources, keep_images=overlays):
            writer.add(item)
        return writer.close()


@dataclass(frozen=True)
class _InMemory:
    """An image given as a Pillow image or a tensor (not a file)."""

    name: str
    value: Image.Image | Tensor
    path: None = None


def _sources(images: ImageInput | Iterable[ImageInput]) -> list[ImageSource | _InMemory]:
    """Files and folders through :func:`find_images`; in-memory images named ``image_<index>``."""
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image, Tensor)) else list(images)
    sources: list[ImageSource | _InMemory] = []
    paths = [item for item in items if isinstance(item, (str, os.PathLike))]
    found = iter(find_images(paths)) if paths else iter(())
    for index, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            continue
        if not isinstance(item, (Image.Image, Tensor)):
            raise DataError(f"image {index} is a {type(item).__name__}; pass files, folders, Pillow images or "
                            "uint8 (3, H, W) tensors")
        sources.append(_InMemory(f"image_{index:04d}", item))
    return [*found, *sources]       # files and folders first, then in-memory images in their order


def _decode(source: ImageSource | _InMemory) -> Tensor | ImageFailure:
    if isinstance(source, _InMemory):
        value = source.value
        if isinstance(value, Tensor):
            if value.dtype != torch.uint8 or value.ndim != 3 or value.shape[0] != 3:
                raise DataError(f"{source.name}: a tensor image must be uint8 (3, H, W), got "
                                f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}")
            return value.cpu()
        return load_image(value)
    try:
        return load_image(source.path)
    except DataError as error:
        return ImageFailure(source.name, str(error))
