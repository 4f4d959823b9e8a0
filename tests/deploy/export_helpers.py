"""Models, images and comparisons for the export tests: random-weight models at small sizes, eager vs exported."""

from __future__ import annotations

from pathlib import Path

import torch

from vertebra.deploy.export import export_model, trace

# Tolerances (float32 everywhere; OpenVINO pinned to f32): dense outputs differ from eager by
# reassociation only (observed <= 3e-6 on these models).
DENSE_RTOL, DENSE_ATOL = 1e-4, 1e-5
# Detections: same count and labels; boxes in pixels, scores absolute (the classifier's weights
# are scaled up to spread the scores, which also scales float noise).
BOX_ATOL, SCORE_ATOL = 1e-2, 1e-4


def export_all(model, folder: Path, example_size=(64, 64)) -> dict[str, Path]:
    """One torch.export of ``model``, saved as pt2, ONNX and OpenVINO (converted from that ONNX file)."""
    program = trace(model, example_size=example_size)
    paths = {"pt2": export_model(model, "pt2", folder / "model.pt2", program=program),
             "onnx": export_model(model, "onnx", folder / "model.onnx", program=program)}
    paths["openvino"] = export_model(model, "openvino", folder / "model.xml", onnx_file=paths["onnx"])
    return paths


def runners(paths: dict[str, Path]):
    """``{format: run(x) -> list[Tensor]}`` for the three exported files."""
    import onnxruntime
    import openvino

    program = torch.export.load(str(paths["pt2"])).module()
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    compiled = openvino.Core().compile_model(str(paths["openvino"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    name = session.get_inputs()[0].name

    def run_pt2(x):
        with torch.no_grad():
            out = program(x)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def run_ort(x):
        return [torch.from_numpy(a) for a in session.run(None, {name: x.numpy()})]

    def run_ov(x):
        result = compiled(x.numpy())
        return [torch.from_numpy(result[o].copy()) for o in compiled.outputs]

    return {"pt2": run_pt2, "onnx": run_ort, "openvino": run_ov}


def assert_same_detections(expected: dict, actual: list[torch.Tensor], where: str) -> None:
    """Same number of detections, labels, boxes and scores (order-insensitive among tied scores)."""
    boxes, scores, labels = actual[:3]
    assert len(boxes) == len(expected["boxes"]), f"{where}: {len(boxes)} detections, eager has {len(expected['boxes'])}"
    unmatched = list(range(len(boxes)))
    for box, score, label in zip(expected["boxes"], expected["scores"], expected["labels"]):
        hit = [j for j in unmatched if labels[j] == label and abs(float(scores[j] - score)) <= SCORE_ATOL
               and float((boxes[j] - box).abs().max()) <= BOX_ATOL]
        assert hit, f"{where}: eager detection {box.tolist()} {float(score):.5f} label {int(label)} not found"
        unmatched.remove(hit[0])
    if "masks" in expected and len(boxes):
        assert actual[3].shape == expected["masks"].shape, where
        order = [int(torch.argmin((boxes - b).abs().amax(dim=1))) for b in expected["boxes"]]
        torch.testing.assert_close(actual[3][order], expected["masks"], rtol=1e-3, atol=1e-3)
