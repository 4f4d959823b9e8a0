"""export_model for the dense heads and the classifier: pt2, ONNX (onnxruntime) and OpenVINO against eager.

Coverage (the full head x family matrix does not fit the suite's time on 2 cores; ONNX export alone
takes 10-50 s a model): every head on mobilenet_v3_small, and every family on two heads
(classifier, unet).  Detectors are in test_export_detection.py.  Each case traces once and saves
all three formats from that trace; each runs at two input sizes and a batch of two.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from export_helpers import DENSE_ATOL, DENSE_RTOL, export_all, runners
from vertebra import registry
from vertebra.deploy import export as export_module
from vertebra.deploy.export import export_model, trace
from vertebra.errors import ExportError, VertebraError

DENSE_HEADS = ["classifier", "lraspp", "deeplabv3", "unet", "fpn", "deeplabv3plus", "upernet"]
CASES = ([(head, "mobilenet_v3_small") for head in DENSE_HEADS]
         + [(head, family) for family in ("efficientnet_b0", "efficientnet_v2_s") for head in ("classifier", "unet")])


def _model(head: str, backbone: str) -> nn.Module:
    torch.manual_seed(0)
    model = registry.build(head, backbone=backbone, num_classes=3).eval()
    with torch.no_grad():  # zero-initialised output layers would make every comparison trivially 0 == 0
        for parameter in model.parameters():
            if parameter.ndim > 1 and not parameter.any():
                parameter.normal_(std=0.1)
    return model


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out["out"] if isinstance(out, dict) else out


@pytest.mark.slow
@pytest.mark.parametrize(("head", "backbone"), CASES, ids=[f"{h}-{b}" for h, b in CASES])
def test_dense_export_matches_eager_in_every_format(head, backbone, tmp_path):
    model = _model(head, backbone)
    run = runners(export_all(model, tmp_path))
    for size in [(64, 96), (96, 64)]:  # neither is the traced 64x64: one dynamic export serves both
        x = torch.rand(2, 3, *size)
        expected = _eager(model, x)
        assert expected.abs().max() > 0
        for fmt, runner in run.items():
            (actual,) = runner(x)
            torch.testing.assert_close(actual, expected, rtol=DENSE_RTOL, atol=DENSE_ATOL,
                                       msg=lambda m: f"{fmt} at {size}: {m}")


def test_export_sees_plain_batchnorm_not_the_eager_fold():
    program = trace(_model("classifier", "mobilenet_v3_small"), example_size=(64, 64))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any("batch_norm" in t for t in targets), sorted(targets)


def test_static_export_fixes_the_size(tmp_path):
    model = _model("lraspp", "mobilenet_v3_small")
    program = trace(model, example_size=(64, 64), dynamic=False)
    assert tuple(program.module()(torch.rand(2, 3, 64, 64)).shape) == (2, 3, 64, 64)
    with pytest.raises(Exception):
        program.module()(torch.rand(2, 3, 96, 64))


def test_unknown_format_is_a_typed_error(tmp_path):
    with pytest.raises(ExportError, match="unknown export format 'tflite'.*pt2, onnx, openvino"):
        export_model(_model("classifier", "mobilenet_v3_small"), "tflite", tmp_path / "m.tflite")


def test_bad_example_size_is_a_typed_error(tmp_path):
    with pytest.raises(ExportError, match="example_size"):
        export_model(_model("classifier", "mobilenet_v3_small"), "pt2", tmp_path / "m.pt2", example_size=(64,))


def test_openvino_needs_an_xml_path(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "trace", lambda *a, **k: pytest.fail("exported before checking the path"))
    with pytest.raises(ExportError, match=r"\.xml"):
        export_model(_model("classifier", "mobilenet_v3_small"), "openvino", tmp_path / "m.bin")
    assert list(tmp_path.iterdir()) == []


class _DataDependent(nn.Module):
    """A model whose forward branches on a tensor's value: torch.export cannot trace it."""

    config = {"head": "branchy"}

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_a_head_that_cannot_export_names_itself_and_why(tmp_path):
    with pytest.raises(ExportError, match=r"head 'branchy' cannot be exported with torch.export: \w+"):
        export_model(_DataDependent(), "pt2", tmp_path / "m.pt2")


def test_a_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(VertebraError, match=r'pip install "vertebra\[deploy\]"'):
        export_model(_model("classifier", "mobilenet_v3_small"), "openvino", tmp_path / "m.xml")


def test_nothing_is_left_behind_when_an_export_fails(tmp_path):
    with pytest.raises(ExportError):
        export_model(_DataDependent(), "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("head", ["retinanet_fpn", "fcos_fpn", "ssdlite"])
def test_a_one_stage_detector_is_refused_before_tracing_with_the_reason(tmp_path, monkeypatch, head):
    from vertebra.deploy import runtimes

    monkeypatch.setattr(torch.export, "export", lambda *a, **k: pytest.fail("traced a one-stage detector"))
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=3, fpn_channels=64) \
        if head != "ssdlite" else registry.build(head, backbone="mobilenet_v3_small", num_classes=3)
    with pytest.raises(ExportError, match=r"one-stage detector\) does not export yet.*model\(images\)"):
        export_model(model, "onnx", tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="one-stage"):
        runtimes.make_runner(model, "torch", tmp_path)
    assert list(tmp_path.iterdir()) == []
