"""``vertebra.optimize(model, backend=...)``: the fast inference copy of a model, in torch or in OpenVINO.

* ``backend="torch"`` (the default) is :func:`vertebra.inference.optimize`: the same module with
  BatchNorm folded, oneDNN fusions and fused TorchScript graphs.
* ``backend="openvino"`` hands the model to OpenVINO and returns an :class:`OpenVINOModule`, called
  like the model and returning what it returns, computed by OpenVINO in float32
  (:mod:`.openvino_engine` says how it is made fast).  Dense models and classifiers are converted
  from the torch module (``openvino.convert_model``, the route OpenVINO documents for PyTorch);
  detectors through vertebra's exportable single-image graph (:mod:`.detection`) and its ONNX
  export, because torchvision's detectors do not convert.

This dispatcher sits in ``deploy`` rather than in ``inference`` because it reaches the export code,
and imports flow down: ``inference`` never imports ``deploy``.  The package root's
``vertebra.optimize`` is this function.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..inference import optimize as optimize_torch
from .detection import is_detector
from .export import export_model, output_names, require

__all__ = ["optimize", "BACKENDS", "OpenVINOModule", "to_openvino"]

BACKENDS = ("torch", "openvino")


def optimize(model: nn.Module, *, backend: str = "torch", **options: Any) -> nn.Module:
    """A faster inference copy of ``model`` with the same call signature and outputs (float tolerance).

    Args:
        model: an ``nn.Module`` with real weights (a vertebra model, or any torchvision-style one).
        backend: ``"torch"`` (default): :func:`vertebra.inference.optimize`, whose keyword options
            (``fold_bn``, ``fuse``, ``graph``, ``compile``, ...) pass through.  ``"openvino"``: the model
            runs in OpenVINO (``pip install "vertebra[deploy]"``); options: ``example_size`` (H, W)
            the conversion traces at (default (224, 224); any size runs afterwards).
    """
    if backend == "torch":
        return optimize_torch(model, **options)
    if backend == "openvino":
        unknown = sorted(set(options) - {"example_size"})
        if unknown:
            raise ConfigError(f"optimize(backend='openvino') takes only example_size; got {', '.join(unknown)} "
                              "(the other options are the torch backend's)", path=unknown[0])
        return to_openvino(model, **options)
    raise ConfigError(f"unknown optimize backend {backend!r}; choose one of {', '.join(BACKENDS)}", path="backend")


def to_openvino(model: nn.Module, *, example_size: tuple[int, int] = (224, 224)) -> "OpenVINOModule":
    """``model`` (eval mode) converted to OpenVINO and wrapped as an :class:`OpenVINOModule`."""
    from .openvino_engine import OpenVINOEngine

    ov = require("openvino", "optimize(backend='openvino')")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"optimize() takes an nn.Module, got {type(model).__name__}")
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ConfigError("optimize() needs real weights, but this model is on the 'meta' device")
    model = model.eval()
    if is_detector(model):
        return OpenVINOModule(OpenVINOEngine(_detector_model(ov, model, example_size)), detector=True,
                              names=output_names(model))
    example = torch.rand(2, 3, *example_size)
    with torch.no_grad():
        structure = model(example)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python values it records
            converted = ov.convert_model(model, example_input=example)
    return OpenVINOModule(OpenVINOEngine(converted), structure=_structure(structure))


def _detector_model(ov: Any, model: nn.Module, example_size: tuple[int, int]) -> Any:
    """The detector's single-image graph as an ``openvino.Model`` (through ONNX; see :mod:`.export`)."""
    with tempfile.TemporaryDirectory(prefix="vertebra-openvino-") as tmp:
        onnx_file = export_model(model, "onnx", Path(tmp) / "model.onnx", example_size=example_size)
        return ov.convert_model(str(onnx_file))  # read into memory: the folder may go


def _structure(output: Any) -> Any:
    """What the model returns, with each tensor replaced by its index among OpenVINO's outputs."""
    counter = iter(range(1 << 30))

    def walk(value: Any) -> Any:
        if isinstance(value, Tensor):
            return next(counter)
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(item) for item in value)
        raise ConfigError(f"optimize(backend='openvino') maps tensors, dicts, lists and tuples of tensors; "
                          f"the model returned a {type(value).__name__}")
    return walk(output)


def _rebuild(structure: Any, outputs: list[Tensor]) -> Any:
    if isinstance(structure, int):
        return outputs[structure]
    if isinstance(structure, dict):
        return {key: _rebuild(item, outputs) for key, item in structure.items()}
    return type(structure)(_rebuild(item, outputs) for item in structure)


class OpenVINOModule(nn.Module):
    """A model running in OpenVINO, called like the torch model it was converted from.

    Dense models and classifiers: ``module(x: Tensor[N, 3, H, W])`` returns the model's tensors,
    dicts and lists (``{"out": ...}``, logits).  Detectors: ``module(images)`` with a list of
    ``[3, H, W]`` images (or a batch tensor) returns one ``{"boxes", "scores", "labels"[, "masks"]}``
    per image, the images of a call running concurrently.  Inference only; no parameters to train.
    """

    def __init__(self, engine: Any, *, structure: Any = 0, detector: bool = False, names: list[str] = ()):
        super().__init__()
        self.engine, self.structure, self.detector, self.names = engine, structure, detector, list(names)
        self.optimization_report = {"backend": "openvino", "source": "onnx export" if detector else "torch module"}

    def forward(self, x: Any) -> Any:
        if self.detector:
            images = [image[None] for image in x]
            return [dict(zip(self.names, result)) for result in self.engine.run_each(images)]
        if not isinstance(x, Tensor):
            raise ConfigError(f"this OpenVINO model takes a Tensor[N, 3, H, W], got {type(x).__name__}")
        return _rebuild(self.structure, self.engine(x))

    def extra_repr(self) -> str:
        return f"backend=openvino, detector={self.detector}, outputs={self.names}"
