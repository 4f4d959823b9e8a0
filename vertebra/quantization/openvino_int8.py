"""Post-training int8 for OpenVINO through NNCF: the model, calibrated, as an int8 OpenVINO graph.

Why this backend: on x86 CPUs OpenVINO's int8 kernels (VNNI / AMX) are the fastest well-kept path,
and NNCF is the library made to quantize for it -- it places the quantizers where OpenVINO's CPU
plugin can fuse them (depthwise convolutions, residual adds, SiLU / hard-swish and the
squeeze-and-excitation gates included), and corrects the bias shift int8 rounding causes.  No
kernel or quantizer is written here; this module only hands NNCF the right graph and inputs.

The graph handed to NNCF is the one ``vertebra predict --runtime openvino`` runs:
``openvino.convert_model`` of the eval model's deployable module for the dense heads and the
classifier, and the ONNX export (:mod:`vertebra.deploy.export`) for the detectors, whose
post-processing only converts that way.  Either keeps dynamic height and width.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..deploy.detection import is_detector
from ..deploy.export import deployable, export_model, require
from ..errors import QuantizationError

__all__ = ["INSTALL_HINT", "quantize_for_openvino", "float_graph", "convert_module", "graph_files",
           "require_quantize_extra"]

INSTALL_HINT = 'pip install "vertebra[quantize]"'


def require_quantize_extra() -> tuple[Any, Any]:
    """``(nncf, openvino)``, or a :class:`MissingExtraError` naming the install command."""
    return (require("nncf", "int8 quantization", INSTALL_HINT),
            require("openvino", "int8 quantization", INSTALL_HINT))


def float_graph(model: nn.Module, example: Tensor, scratch: Path) -> Any:
    """The float ``openvino.Model`` of ``model`` (eval), dynamic in height and width."""
    _, ov = require_quantize_extra()
    if is_detector(model):
        size = (int(example.shape[-2]), int(example.shape[-1]))
        onnx_file = export_model(model, "onnx", scratch / "model.onnx", example_size=size)
        return ov.convert_model(str(onnx_file))
    return convert_module(deployable(model), example)


def convert_module(module: nn.Module, example: Tensor) -> Any:
    """``openvino.convert_model`` of a one-tensor-in module (eval), any batch, height and width.

    OpenVINO's PyTorch frontend reads TorchScript; convert_model would trace too, then trace again
    to check it (seconds).  From a torch.export program it converts 2x slower.  torch 2.14 calls
    jit.trace deprecated; until OpenVINO reads programs as fast, this is the quicker road.
    """
    _, ov = require_quantize_extra()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.trace")
        traced = torch.jit.trace(module, example, check_trace=False)
        converted = ov.convert_model(traced, example_input=example)
    for port in converted.inputs:   # any batch, height and width, as the ONNX export has
        port.get_node().set_partial_shape(ov.PartialShape([-1, 3, -1, -1]))
    converted.validate_nodes_and_infer_types()
    return converted


def quantize_for_openvino(model: nn.Module, inputs: list[Tensor], *,
                          fast_bias_correction: bool = True) -> tuple[Any, Any]:
    """``(int8, float)`` ``openvino.Model`` s of ``model``, the int8 one calibrated on ``inputs`` (each
    ``(1, 3, H, W)``); the float one is what it was made from, for comparing the two."""
    nncf, _ = require_quantize_extra()
    model = model.eval()
    with tempfile.TemporaryDirectory(prefix="vertebra-int8-") as scratch:
        converted = float_graph(model, inputs[0], Path(scratch))
        dataset = nncf.Dataset(inputs, lambda x: x.numpy())
        try:
            return nncf.quantize(converted, dataset, subset_size=len(inputs),
                                 fast_bias_correction=fast_bias_correction), converted
        except Exception as error:  # noqa: BLE001 - NNCF raises many kinds; the model is the cause
            head = (getattr(model, "config", None) or {}).get("head", type(model).__name__)
            raise QuantizationError(f"NNCF could not quantize head {head!r} for OpenVINO "
                                    f"({type(error).__name__}: {error}); keep it in float "
                                    "(vertebra export --format openvino)") from error


def graph_files(quantized: Any) -> dict[str, bytes]:
    """``{"model.xml": ..., "model.bin": ...}`` of an ``openvino.Model`` (weights kept as they are)."""
    _, ov = require_quantize_extra()
    with tempfile.TemporaryDirectory(prefix="vertebra-int8-") as scratch:
        xml = Path(scratch) / "model.xml"
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        return {"model.xml": xml.read_bytes(), "model.bin": xml.with_suffix(".bin").read_bytes()}
