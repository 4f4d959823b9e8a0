"""Export any vertebra model, detectors included, to a file: ``pt2``, ``onnx`` or ``openvino``.

One route for every head: the eval-mode model (a detector first becomes the single-image graph of
:class:`~.detection.ExportableDetector`) is traced once with ``torch.export`` with dynamic height
and width; that program is saved as ``.pt2``, handed to the dynamo ONNX exporter
(``torch.onnx.export(program, dynamo=True)``) for ``.onnx``, and the ONNX file is converted by
``openvino.convert_model`` for ``.xml`` + ``.bin``.  OpenVINO converts from ONNX rather than from the
program because its PyTorch frontend has no conversion for ``torchvision::nms`` nor for the
``sym_min`` a detector's dynamic sizes produce; the ONNX file has ``NonMaxSuppression`` and plain
shape arithmetic.

What the graph computes:

* classifier: ``[N, 3, H, W] -> logits [N, C]``;
* dense heads: ``[N, 3, H, W] -> out [N, C, H, W]`` (the main output; an ``aux`` head is a training aid
  and is not exported);
* detectors: ``image [1, 3, H, W] -> boxes, scores, labels[, masks]`` (see :mod:`.detection`).

Eager BatchNorm folding steps aside while ``torch.export`` traces (it checks
``torch.compiler.is_compiling``), so the exported graph has torchvision's plain conv/BN ops and each
runtime does its own fusion.  Files are written completely or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ExportError, MissingExtraError
from .detection import OUTPUT_NAMES, ExportableDetector, check_not_one_stage, is_detector

__all__ = ["FORMATS", "SUFFIXES", "export_model", "trace", "deployable", "head_name", "output_names",
           "require", "INSTALL_HINT"]

FORMATS = ("pt2", "onnx", "openvino")
SUFFIXES = {"pt2": ".pt2", "onnx": ".onnx", "openvino": ".xml"}
INSTALL_HINT = 'pip install "vertebra[deploy]"'
_EXAMPLE_BATCH = 2  # torch.export specializes a dimension seen as 0 or 1; trace at 2 to keep N dynamic


def require(module: str, purpose: str, install: str = INSTALL_HINT) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming ``install``, the command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{purpose} needs the {module.split('.')[0]!r} package, which is not installed; "
                                f"run: {install}") from exc


def head_name(model: nn.Module) -> str:
    """The registry name of ``model``'s head (from ``model.config``), else its class name."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and isinstance(config.get("head"), str):
        return config["head"]
    return type(model).__name__


class _MainOutput(nn.Module):
    """A dense or classification model as one tensor in, one tensor out (``out``, or the logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        result = self.model(x)
        return result["out"] if isinstance(result, dict) else result


def deployable(model: nn.Module, *, example_size: tuple[int, int] = (96, 96)) -> nn.Module:
    """The module that is exported for ``model`` (eval mode): the detector graph or the main output."""
    check_not_one_stage(model)
    model = model.eval()
    if is_detector(model):
        return ExportableDetector(model, example_size=example_size).eval()
    return _MainOutput(model).eval()


def output_names(model: nn.Module) -> list[str]:
    """Names of the exported graph's outputs (the ONNX/OpenVINO output names)."""
    if is_detector(model):
        has_masks = getattr(model.roi_heads, "has_mask", lambda: False)()
        return list(OUTPUT_NAMES if has_masks else OUTPUT_NAMES[:3])
    result = getattr(model, "config", {}) or {}
    return ["logits"] if result.get("head") == "classifier" else ["out"]


def trace(model: nn.Module, *, example_size: tuple[int, int] = (96, 96),
          dynamic: bool = True) -> torch.export.ExportedProgram:
    """``torch.export`` of :func:`deployable` ``(model)``: dynamic height/width (and batch for non-detectors)."""
    _check_size(example_size)
    module = deployable(model, example_size=example_size)
    detector = isinstance(module, ExportableDetector)
    batch = 1 if detector else _EXAMPLE_BATCH
    example = torch.rand(batch, 3, *example_size)
    shapes = None
    if dynamic:
        auto = torch.export.Dim.AUTO
        shapes = ({2: auto, 3: auto} if detector else {0: auto, 2: auto, 3: auto},)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's meta kernels warn about a renamed API
            return torch.export.export(module, (example,), dynamic_shapes=shapes)
    except Exception as exc:  # noqa: BLE001 - any tracer failure becomes one typed error
        raise ExportError(f"head {head_name(model)!r} cannot be exported with torch.export: "
                          f"{_first_line(exc)}") from exc


def export_model(model: nn.Module, fmt: str, path: str | os.PathLike[str], *,
                 example_size: tuple[int, int] = (96, 96), dynamic: bool = True, opset: int | None = None,
                 program: torch.export.ExportedProgram | None = None,
                 onnx_file: str | os.PathLike[str] | None = None) -> Path:
    """Export ``model`` (eval mode) to ``path`` in ``fmt`` (``"pt2"``, ``"onnx"``, ``"openvino"``).

    ``path`` is the file written (``.pt2``, ``.onnx``, or the ``.xml`` of OpenVINO's ``.xml`` + ``.bin``).
    ``example_size`` is the (H, W) traced at; with ``dynamic`` the graph takes any height and width
    (and batch, except detectors: one image per call).  ``opset`` is the ONNX opset (the exporter's
    default when ``None``).  ``program`` reuses a :func:`trace` of the same model (one trace for
    several formats); ``onnx_file`` lets ``"openvino"`` convert an ONNX file already exported from it.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "openvino":
        if path.suffix != ".xml":  # said before minutes of exporting, not after
            raise ExportError(f"an OpenVINO export is an .xml file (with its .bin beside it), got {str(path)!r}")
        ov = require("openvino", "export to OpenVINO")
        if onnx_file is None:
            with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
                source = export_model(model, "onnx", Path(tmp) / "model.onnx", example_size=example_size,
                                      dynamic=dynamic, opset=opset, program=program)
                return _save_openvino(ov, ov.convert_model(str(source)), path)
        return _save_openvino(ov, ov.convert_model(str(onnx_file)), path)
    if program is None:
        program = trace(model, example_size=example_size, dynamic=dynamic)
    if fmt == "pt2":
        with _replacing(path) as tmp:
            torch.export.save(program, tmp)
        return path
    return _save_onnx(model, program, path, opset)


def _save_onnx(model: nn.Module, program: torch.export.ExportedProgram, path: Path, opset: int | None) -> Path:
    require("onnxscript", "export to ONNX")
    onnx = require("onnx", "export to ONNX")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, verbose=False,
                                             input_names=["image" if is_detector(model) else "input"],
                                             output_names=output_names(model))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"head {head_name(model)!r} cannot be exported to ONNX: {_first_line(exc)}") from exc
    with _replacing(path) as tmp:
        onnx_program.save(str(tmp))
        onnx.checker.check_model(str(tmp))
    return path


def _save_openvino(ov: Any, converted: Any, path: Path) -> Path:
    """``openvino.save_model`` in full precision (its default halves the weights to fp16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        xml = Path(tmp) / path.name
        ov.save_model(converted, str(xml), compress_to_fp16=False)
        os.replace(xml.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(xml, path)  # the .xml last: it is what a reader opens
    return path


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that becomes ``path`` if the body completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        target = Path(tmp) / path.name
        yield target
        for extra in Path(tmp).iterdir():  # external-data files an exporter wrote beside it
            if extra != target:
                shutil.move(str(extra), path.parent / extra.name)
        os.replace(target, path)


def _check_size(size: Any) -> None:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 2 for s in size)):
        raise ExportError(f"example_size is (height, width) in pixels, each >= 2; got {size!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
