"""Deployment throughput: vertebra's fastest CPU path against ONNX Runtime and OpenVINO driven directly.

Cases (batch 1 and batch 8; the smoke run uses batch 1 and 2 at 64 px): classifier on
efficientnet_b0 and mobilenet_v3_large, lraspp and fasterrcnn_fpn on mobilenet_v3_large.  Per case,
in one process and interleaved rounds:

* ours (timed by pytest-benchmark): ``vertebra.optimize(model, backend="openvino")``;
* ``openvino``: OpenVINO fp32 driven directly, the primary reference (``ratio`` > 1: ours is faster).
  Dense models: ``openvino.convert_model(model)`` from the torch module, compiled with
  ``INFERENCE_PRECISION_HINT=f32`` (its default is bf16 on CPUs with AMX/AVX-512 BF16: not the same
  arithmetic).  Detectors: torchvision's cannot be converted, so it is our exported graph, which is
  what a user would have to hand OpenVINO anyway;
* ``onnxruntime``: vertebra's ONNX export (``vertebra.deploy.export_model``) in an InferenceSession;
* ``vertebra_openvino``: ``make_runner(model, "openvino", ...)``: export + runner, the path behind
  ``vertebra predict --runtime openvino``;
* ``vertebra_optimize``: ``vertebra.optimize(model)``, the torch fast path;
* ``torch_eager``: the eval model as built.

``best`` in ``extra_info`` is the fastest vertebra path (ours, ``vertebra_optimize``,
``onnxruntime`` on vertebra's export, ``vertebra_openvino``) against OpenVINO direct: the issue's
goal is that ratio >= 1.0.

A detector graph takes one image; the references call it per image of the batch (vertebra's
OpenVINO paths run a batch's images concurrently).

``test_deploy_predict``: ``Predictor.predict_to`` end to end (decode PNGs, preprocess, model,
postprocess, write result files and overlays) on a folder of 16 generated images, batch size 8, with
``runtime="openvino"`` (ours) and ``"torch"``; ``model_only`` is the same OpenVINO runner on the 16
preprocessed images, so its images/s is the model-only figure next to the end-to-end one (its
``ratio`` < 1 is the share of the end-to-end time the model takes).  Every model has
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
        "vertebra_optimize": _eager_step(vertebra.optimize(model), images, detector),
        "torch_eager": _eager_step(model, images, detector),
    }
    ours = vertebra.optimize(model, backend="openvino", example_size=(size, size))
    side_by_side(benchmark, _eager_step(ours, images, detector), references,
                 rounds=settings.head_rounds, warmup=settings.warmup + 2, images=batch,
                 ours_name="optimize_openvino", best_of=("vertebra_optimize", "onnxruntime", "vertebra_openvino"))


PREDICT_CASES = [case for case in CASES if case.values[0] != "fasterrcnn_fpn"]
PREDICT_IMAGES = 16


def _artifact(model, head: str, size: int, path: Path) -> Path:
    from vertebra.data import IMAGENET_MEAN, IMAGENET_STD
    from vertebra.weights.artifact import Preprocessing, save_artifact

    if head == "classifier":  # ImageNet's evaluation transform, scaled to the case's size
        preprocessing = Preprocessing("shorter_crop", size * 8 // 7, size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    else:
        preprocessing = Preprocessing("square", size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    task = "classification" if head == "classifier" else "semantic"
    count = 1000 if head == "classifier" else 21
    return save_artifact(path, model, task=task, class_names=[f"class{i}" for i in range(count)],
                         preprocessing=preprocessing)


def _png_folder(folder: Path, size: int) -> Path:
    """PREDICT_IMAGES photos-like PNGs (smooth colour fields plus noise), larger than the model input."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    height, width = size * 5 // 4, size * 3 // 2
    for index in range(PREDICT_IMAGES):
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.random(3)
        pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{index:02d}.png")
    return folder


@pytest.mark.parametrize(("head", "backbone"), PREDICT_CASES)
def test_deploy_predict(benchmark, settings, workdir, head, backbone):
    from vertebra.deploy import Predictor
    from vertebra.deploy.preprocess import preprocess
    from vertebra.deploy.images import find_images, load_image

    size = settings.size
    benchmark.group = f"deploy predict {head} end to end [cpu-fp32]"
    model = _model(head, backbone, size, False)
    case = workdir / f"predict-{head}-{backbone}"
    artifact = _artifact(model, head, size, case / "model.safetensors")
    images = _png_folder(case / "images", size)
    benchmark.extra_info.update(head=head, backbone=backbone, batch=8, size=size, variant="cpu-fp32")
    ours = Predictor(artifact, runtime="openvino", batch_size=8, workdir=workdir)
    eager = Predictor(artifact, runtime="torch", batch_size=8)
    batches = torch.stack([preprocess(load_image(source.path), ours.artifact.preprocessing)[0]
                           for source in find_images([images])]).split(8)
    references = {
        "torch_predict": lambda: eager.predict_to(case / "out-torch", images),
        "model_only": lambda: [ours.runner(batch) for batch in batches],
    }
    side_by_side(benchmark, lambda: ours.predict_to(case / "out-openvino", images), references,
                 rounds=settings.head_rounds, warmup=settings.warmup + 2, images=PREDICT_IMAGES)
