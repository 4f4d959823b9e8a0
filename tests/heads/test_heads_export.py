"""Export: ``torch.export`` (dynamic height/width) for classifier, LR-ASPP and DeepLabV3 on every family,
and ONNX (the dynamo exporter) checked numerically with onnx's reference evaluator.

TorchScript ``torch.jit.script`` is not supported (the Backbone carries Python-only helpers) — use
``torch.export`` or ONNX.
"""

from __future__ import annotations

import warnings

import onnx  # needs onnx + onnxscript (the dynamo exporter); both belong in the test extra
import pytest
import torch
from onnx.reference import ReferenceEvaluator

from heads_helpers import SMALLEST
from vertebra import registry

EXPORTED_HEADS = ["classifier", "lraspp", "deeplabv3"]


def _outputs(result) -> dict[str, torch.Tensor]:
    return dict(result) if isinstance(result, dict) else {"logits": result}


@pytest.mark.parametrize("backbone", SMALLEST)
@pytest.mark.parametrize("head", EXPORTED_HEADS)
def test_torch_export_with_dynamic_spatial_size(head, backbone):
    kwargs = {"num_classes": 4, **({"aux_loss": True} if head == "deeplabv3" else {})}
    model = registry.build(head, backbone=backbone, **kwargs).eval()
    # Any multiple of 32 from 64 to 1024 px (the deepest level has stride 32).
    height = 32 * torch.export.Dim("h32", min=2, max=32)
    width = 32 * torch.export.Dim("w32", min=2, max=32)
    program = torch.export.export(model, (torch.randn(1, 3, 64, 64),),
                                  dynamic_shapes=({2: height, 3: width},))
    exported = program.module()
    x = torch.randn(1, 3, 96, 160)  # not the size it was traced at
    with torch.no_grad():
        expected, actual = _outputs(model(x)), _outputs(exported(x))
    assert list(actual) == list(expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key])


@pytest.mark.parametrize("head", EXPORTED_HEADS)
def test_onnx_export_runs_and_matches(head):
    # Small input and, for DeepLabV3, small atrous rates: onnx's reference evaluator convolves in numpy,
    # and rate-36 padding would make it pad a 2x2 map to 74x74.  The exported ops are the same.
    kwargs = {"atrous_rates": [1, 2, 3]} if head == "deeplabv3" else {}
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=4, **kwargs).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.checker.check_model(proto)
    with torch.no_grad():
        expected = _outputs(model(x))
    (name,) = [i.name for i in proto.graph.input]
    actual = ReferenceEvaluator(proto).run(None, {name: x.numpy()})
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected.values()):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
