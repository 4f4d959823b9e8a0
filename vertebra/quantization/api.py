"""``quantize(model, calibration)``: post-training int8 of a model artifact, as an int8 artifact.

The result is an ordinary artifact (:mod:`vertebra.weights.artifact`) -- the same task, class
names, preprocessing, config and float weights -- plus the int8 graph embedded in it, so
``vertebra predict`` and ``vertebra export`` take it like any other, and nothing about the float
model is lost.  What was done is recorded in the graph's ``info``: the backend and its versions,
the calibration images used and skipped, how many layers run in int8 (counted from the compiled
runtime graph, see :mod:`.report`) and the cosine similarity of int8 to float outputs on the
calibration inputs (a self-check; accuracy on held-out data is the benchmarks' job).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..deploy.detection import is_detector
from ..deploy.embedded import compile_embedded, embedded_runner
from ..deploy.model import load_model, model_artifact
from ..errors import QuantizationError
from ..validation import check_choice
from ..weights.artifact import Artifact, EmbeddedGraph, save_artifact
from .calibration import calibration_inputs
from .openvino_int8 import graph_files, quantize_for_openvino, require_quantize_extra
from .report import count_runtime_ops, count_weighted_modules, cosine_similarity

__all__ = ["BACKENDS", "DEFAULT_SAMPLES", "Quantized", "quantize"]

BACKENDS = ("openvino",)
DEFAULT_SAMPLES = 300   # NNCF's default subset size
_SELF_CHECK_INPUTS = 8

PathLike = str | os.PathLike[str]


@dataclass
class Quantized:
    """An int8 model: ``artifact`` (with its embedded graph), ``report`` (``artifact.graph.info``).

    Calling it runs the int8 graph with the float model's output structure; :meth:`save` writes the
    int8 artifact.
    """

    artifact: Artifact
    model: nn.Module   # the float model it was made from (output names, re-quantizing)

    @property
    def report(self) -> dict[str, Any]:
        assert self.artifact.graph is not None
        return self.artifact.graph.info

    def __call__(self, batch: Any) -> Any:
        if not hasattr(self, "_runner"):
            self._runner = embedded_runner(self.model, self.artifact)
        return self._runner(batch)

    def save(self, path: PathLike) -> Path:
        """Write the int8 artifact to ``path`` (atomically): float weights, metadata and the int8 graph."""
        a = self.artifact
        return save_artifact(path, self.model, task=a.task, config=a.config, class_names=a.class_names,
                             preprocessing=a.preprocessing, metadata=a.metadata, category_ids=a.category_ids,
                             graph=a.graph)


def quantize(model: PathLike | nn.Module, calibration: PathLike | Sequence[PathLike], *,
             samples: int = DEFAULT_SAMPLES, backend: str = "openvino") -> Quantized:
    """Post-training int8 of ``model`` (an artifact path, a training output folder, or a model from
    :func:`~vertebra.load_model`), calibrated on ``calibration`` (image files / folders, or a training
    config whose training images are used), through ``backend``.

    Raises :class:`~vertebra.errors.QuantizationError` for unusable calibration data or a model the
    backend cannot quantize, :class:`~vertebra.errors.MissingExtraError` without the extra.
    """
    check_choice(backend, BACKENDS, "backend")
    require_quantize_extra()   # before minutes of reading images
    if not isinstance(model, nn.Module):
        model = load_model(model)
    float_artifact = model_artifact(model)
    if float_artifact.graph is not None:
        raise QuantizationError(f"this artifact is already {float_artifact.graph.precision} "
                                f"({float_artifact.graph.runtime}); quantize the float artifact it was made from")
    model = model.cpu().eval()
    data = calibration_inputs(calibration, float_artifact.preprocessing, samples=samples)
    quantized, _ = quantize_for_openvino(model, data.inputs)
    graph = EmbeddedGraph("openvino", "int8", graph_files(quantized),
                          info=_info(model, data, backend))
    result = Quantized(dataclasses.replace(float_artifact, graph=graph), model)
    compiled = compile_embedded(graph)
    counts = count_runtime_ops(compiled)
    del compiled
    if counts.int8_total == 0:
        raise QuantizationError(f"quantization ran but no layer of this {float_artifact.config.get('head')!r} model "
                                "executes in int8 on this CPU (OpenVINO fell back to float); keep it in float")
    graph.info["ops"] = counts.to_dict()
    graph.info["cosine_on_calibration"] = _self_check(result, model, data.inputs[:_SELF_CHECK_INPUTS])
    return result


def _info(model: nn.Module, data: Any, backend: str) -> dict[str, Any]:
    import nncf
    import openvino

    return {"backend": backend, "method": "post-training (NNCF quantize, fast bias correction)",
            "nncf": nncf.__version__, "openvino": openvino.__version__,
            "calibration": {"samples": len(data.inputs), "unreadable": data.unreadable},
            "weighted_modules": count_weighted_modules(model)}


def _self_check(result: Quantized, model: nn.Module, inputs: list[torch.Tensor]) -> float | None:
    """The lowest cosine similarity of int8 to float outputs over ``inputs`` (None for detectors:
    their outputs are sets of boxes, compared by the benchmarks' mAP instead)."""
    if is_detector(model):
        return None
    worst = 1.0
    with torch.no_grad():
        for x in inputs:
            expected, actual = model(x), result(x)
            if isinstance(expected, dict):
                expected, actual = expected["out"], actual["out"]
            worst = min(worst, cosine_similarity(expected, actual))
    return round(worst, 6)
