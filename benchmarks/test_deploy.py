"""Deployment throughput: vertebra's fastest CPU path against ONNX Runtime and OpenVINO driven directly.

Cases (batch 1 and batch 8; the smoke run uses batch 1 and 2 at 64 px): classifier on
efficientnet_b0 and mobilenet_v3_large, lraspp and fasterrcnn_fpn on mobilenet_v3_large.  Per case,
in one process and interleaved rounds:

* ours (timed by pytest-benchmark): ``vertebra.optimize(model)``, the fast path in Python;
* ``openvino``: OpenVINO fp32 driven directly, the primary reference (``ratio`` > 1: ours is faster).
  Dense models: ``openvino.convert_model(model)`` from the torch module, compiled with
  ``INFERENCE_PRECISION_HINT=f32`` (its default is bf16 on CPUs with AMX/AVX-512 BF16: not the same
  arithmetic).  Detectors: torchvision's cannot be converted, so it is our exported graph, which is
  what a user would have to hand OpenVINO anyway;
* ``onnxruntime``: vertebra's ONNX export (``vertebra.deploy.export_model``) in an InferenceSession;
* ``vertebra_openvino``: ``make_runner(model, "openvino", ...)``: export + runner, the path behind
  ``vertebra predict --runtime openvino``;
* ``torch_eager``: the eval model as built.

A detector graph takes one image; its runners are called per image of the batch.  Every model has
calibrated BatchNorm statistics (see ``_steps.calibrate_batchnorm``) before anything is exported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _harness import side_by_side
from _steps import calibrate_batchnorm, make_inputs
from conftest import CPU

import vertebra
from vertebra import registry

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

CASES = [
    pytest.param("classifier", "efficientnet_b0", id="classifier-efficientnet_b0"),
    pytest.param("classifier", "mobilenet_v3_large", id="classifier-mobilenet_v3_large"),
    pytest.param("lraspp", "mobilenet_v3_large", id="lraspp-mobilenet_v3_large"),
    pytest.param("fasterrcnn_fpn", "mobilenet_v3_large", id="fasterrcnn_fpn-mobilenet_v3_large"),
]
BATCHES = ("1", "8")
_F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _batch(settings, which: str) -> int:
    if settings.mode == "smoke":
        return 1 if which == "1" else 2
    return int(which)


def _build(head: str, backbone: str, size: int):
    if head == "fasterrcnn_fpn":  # torchvision's fasterrcnn_mobilenet_v3_large_320_fpn sizes, scaled in smoke
        small = size < 224
        return registry.build(head, backbone=backbone, num_classes=91, preset="torchvision_320",
                              **({"min_size": size, "max_size": size * 2} if small else {}))
    return registry.build(head, backbone=backbone, num_classes=21 if head == "lraspp" else 1000)


_MODELS: dict = {}


def _model(head: str, backbone: str, size: int, detector: bool):
    """One calibrated model per (head, backbone, size) for both batch cases: the same weights, so the
    same fingerprint, so one export serves every reference and both batches."""
    key = (head, backbone, size)
    if key not in _MODELS:
        torch.manual_seed(0)
        images, _ = make_inputs("classification", 2, size, CPU, num_classes=2)
        _MODELS[key] = calibrate_batchnorm(_build(head, backbone, size), list(images) if detector else images)
    return _MODELS[key]


def _openvino_direct(model, images, detector: bool, onnx_file: Path):
    import openvino

    core = openvino.Core()
    if detector:  # torchvision's detector does not convert; ours does, from its ONNX file
        compiled = core.compile_model(openvino.convert_model(str(onnx_file)), "CPU", _F32)
        request = compiled.create_infer_request()
        return lambda: [request.infer({0: image[None].numpy()}) for image in images]
    with torch.no_grad():
        converted = openvino.convert_model(model, example_input=images)
    request = core.compile_model(converted, "CPU", _F32).create_infer_request()
    array = images.numpy()
    return lambda: request.infer({0: array})


def _onnxruntime(images, detector: bool, onnx_file: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if detector:
        return lambda: [session.run(None, {name: image[None].numpy()}) for image in images]
    array = images.numpy()
    return lambda: session.run(None, {name: array})


def _eager_step(model, images, detector: bool):
    batch = list(images) if detector else images

    def step():
        with torch.inference_mode():
            return model(batch)
    return step


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy-bench")


@pytest.mark.parametrize("which", BATCHES, ids=[f"batch{b}" for b in BATCHES])
@pytest.mark.parametrize(("head", "backbone"), CASES)
def test_deploy_inference(benchmark, settings, workdir, head, backbone, which):
    from vertebra.deploy.runtimes import make_runner

    batch, size = _batch(settings, which), settings.size
    detector = head == "fasterrcnn_fpn"
    benchmark.group = f"deploy {head} batch {which} [cpu-fp32]"
    images, _ = make_inputs("classification", batch, size, CPU, num_classes=2)
    model = _model(head, backbone, size, detector)
    benchmark.extra_info.update(head=head, backbone=backbone, batch=batch, size=size, variant="cpu-fp32")
    runner = make_runner(model, "openvino", workdir, example_size=(size, size))
    onnx_file = runner.path.with_suffix(".onnx")  # make_runner keeps the ONNX file it converted
    references = {
        "openvino": _openvino_direct(model, images, detector, onnx_file),
        "onnxruntime": _onnxruntime(images, detector, onnx_file),
        "vertebra_openvino": lambda: runner(images),
        "torch_eager": _eager_step(model, images, detector),
    }
    side_by_side(benchmark, _eager_step(vertebra.optimize(model), images, detector), references,
                 rounds=settings.head_rounds, warmup=settings.warmup + 2, images=batch)
