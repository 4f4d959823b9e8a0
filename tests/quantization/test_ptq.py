"""Post-training int8 on each family's smallest variant under the classifier, LR-ASPP and DeepLabV3.

What is checked, per model (random weights with calibrated BatchNorm, 64 px, 16 calibration images):

* every convolution and linear layer of the model runs in int8 in the compiled OpenVINO graph
  (counted from its runtime graph: a flow that quantizes nothing fails here, not silently);
* int8 outputs follow float on the calibration images: the median per-image cosine similarity of
  the outputs is >= 0.8.  That bound is loose on purpose and still catches a broken flow (wrong
  scales, wrong inputs, a quantizer in the wrong place give ~0 or negative): a random-weight
  network is chaotic -- an image's logits can be 30x another's -- so int8 ranges set on 16 images
  fit some images badly, and unseen ones worse.  How close int8 stays on *trained* models and real
  data (top-1, mIoU, logit cosine on held-out images) is measured by the accuracy benchmark;
* the int8 artifact predicts through ``Predictor`` (OpenVINO chosen by itself) and exports its IR,
  and both give exactly what the in-process int8 model gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantize_helpers import FAMILIES, HEADS
from vertebra.quantization.report import cosine_similarity, count_weighted_modules

CASES = [(head, family) for family in FAMILIES for head in HEADS]
MIN_MEDIAN_COSINE = 0.8


def _main(output):
    return output["out"] if isinstance(output, dict) else output


@pytest.mark.slow
@pytest.mark.parametrize(("head", "backbone"), CASES, ids=[f"{h}-{b}" for h, b in CASES])
def test_every_weighted_layer_runs_in_int8_and_outputs_follow_float(quantized, calibration_batch, head, backbone):
    model, result, _ = quantized(head, backbone)
    ops = result.report["ops"]
    assert ops["int8_total"] == count_weighted_modules(model) == result.report["weighted_modules"], ops
    assert ops["float_total"] == 0, ops
    with torch.no_grad():
        expected = _main(model(calibration_batch))
    actual = _main(result(calibration_batch))
    assert actual.shape == expected.shape
    cosines = sorted(cosine_similarity(a, e) for a, e in zip(actual, expected))
    assert cosines[len(cosines) // 2] >= MIN_MEDIAN_COSINE, cosines


@pytest.mark.slow
def test_the_int8_artifact_predicts_on_openvino_by_itself(quantized, shapes, tmp_path):
    import vertebra

    _, result, path = quantized("lraspp", "mobilenet_v3_small")
    predictor = vertebra.Predictor(path)
    assert predictor.runtime == "openvino"
    summary = predictor.predict_to(tmp_path / "out", shapes / "val", overlays=False)
    assert summary["predicted"] == 4 and summary["failed"] == 0
    from vertebra.deploy.images import find_images, load_image
    from vertebra.deploy.preprocess import preprocess

    first = find_images(shapes / "val")[0]
    x = preprocess(load_image(first.path), predictor.artifact.preprocessing)[0][None]
    run = predictor.predict([first.path])
    np.testing.assert_array_equal(run.predictions[0].output["mask"].numpy(),  # 64 px: no resize back
                                  result(x)["out"].argmax(1)[0].numpy())


@pytest.mark.slow
def test_the_int8_artifact_exports_its_graph(quantized, calibration_batch, tmp_path):
    import openvino

    from vertebra.cli import main

    _, result, path = quantized("classifier", "mobilenet_v3_small")
    assert main(["export", str(path), "--format", "openvino", "--out", str(tmp_path / "int8.xml")]) == 0
    compiled = openvino.Core().compile_model(str(tmp_path / "int8.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    exported = torch.from_numpy(compiled(calibration_batch.numpy())[0])
    torch.testing.assert_close(exported, result(calibration_batch), rtol=0, atol=0)
    import json

    assert json.loads((tmp_path / "int8.xml.json").read_text())["precision"] == "int8"


@pytest.mark.slow
def test_a_detector_quantizes_through_its_onnx_graph_and_predicts(shapes, tmp_path):
    """Faster R-CNN + FPN (the tiny test config): backbone and FPN in int8 at least, and the int8
    artifact writes a COCO results file like the float one."""
    import sys
    from pathlib import Path

    import vertebra

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
    from deploy_helpers import random_artifact

    source = random_artifact("detection", tmp_path / "detector.safetensors")
    result = vertebra.quantize(source, shapes / "train", samples=8)
    model = vertebra.load_model(source)
    ops = result.report["ops"]
    assert ops["int8_total"] >= count_weighted_modules(model.backbone), ops   # body + FPN
    assert result.report["cosine_on_calibration"] is None     # boxes are not compared by cosine
    (detections,) = result([torch.rand(3, 64, 80)])
    assert set(detections) == {"boxes", "scores", "labels"} and detections["boxes"].shape[-1] == 4
    summary = vertebra.Predictor(result.save(tmp_path / "int8.safetensors"), threshold=0.0).predict_to(
        tmp_path / "out", shapes / "val", overlays=False)
    assert summary["predicted"] == 4 and "results.json" in summary["files"]
