"""Post-training int8 on each family's smallest variant under the classifier, LR-ASPP and DeepLabV3.

What is checked, per model (random weights with calibrated BatchNorm, 64 px, 16 calibration images):

* every convolution and linear layer of the model runs in int8 in the compiled OpenVINO graph
  (counted from its runtime graph: a flow that quantizes nothing fails here, not silently);
* int8 outputs stay close to float on held-out images: cosine similarity >= 0.95 (random weights
  quantize worse than trained ones -- the accuracy benchmark measures trained models on real
  data), and for the dense heads the argmax class agrees on >= 90 % of pixels;
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
MIN_COSINE = 0.95
MIN_PIXEL_AGREEMENT = 0.90


def _main(output):
    return output["out"] if isinstance(output, dict) else output


@pytest.mark.slow
@pytest.mark.parametrize(("head", "backbone"), CASES, ids=[f"{h}-{b}" for h, b in CASES])
def test_every_weighted_layer_runs_in_int8_and_outputs_stay_close(quantized, held_out, head, backbone):
    model, result, _ = quantized(head, backbone)
    ops = result.report["ops"]
    assert ops["int8_total"] == count_weighted_modules(model) == result.report["weighted_modules"], ops
    assert ops["float_total"] == 0, ops
    with torch.no_grad():
        expected = _main(model(held_out))
    actual = _main(result(held_out))
    assert actual.shape == expected.shape
    assert cosine_similarity(actual, expected) >= MIN_COSINE
    if head != "classifier":
        agreement = (actual.argmax(1) == expected.argmax(1)).float().mean()
        assert agreement >= MIN_PIXEL_AGREEMENT, float(agreement)


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
def test_the_int8_artifact_exports_its_graph(quantized, held_out, tmp_path):
    import openvino

    from vertebra.cli import main

    _, result, path = quantized("classifier", "mobilenet_v3_small")
    assert main(["export", str(path), "--format", "openvino", "--out", str(tmp_path / "int8.xml")]) == 0
    compiled = openvino.Core().compile_model(str(tmp_path / "int8.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    exported = torch.from_numpy(compiled(held_out.numpy())[0])
    torch.testing.assert_close(exported, result(held_out), rtol=0, atol=0)
    import json

    assert json.loads((tmp_path / "int8.xml.json").read_text())["precision"] == "int8"
