"""``vertebra.optimize(model, backend="openvino")`` and the OpenVINO engine: the eager model's outputs.

Tolerances are the export tests' (``export_helpers``): OpenVINO runs pinned to float32, so dense
outputs differ from eager by reassociation only; detections match by count, label, box and score.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import vertebra
from export_helpers import DENSE_ATOL, DENSE_RTOL, assert_same_detections
from test_export_detection import _detector, _images
from vertebra import registry
from vertebra.deploy.backends import OpenVINOModule
from vertebra.deploy.openvino_engine import MAX_STATIC_SHAPES, OpenVINOEngine, _chunks
from vertebra.errors import ConfigError, MissingExtraError

SIZES = [(1, 3, 64, 64), (2, 3, 72, 96), (2, 3, 72, 96), (2, 3, 72, 96)]  # the repeats take the static model


def _assert_same(actual, expected):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=DENSE_RTOL, atol=DENSE_ATOL)
    else:
        torch.testing.assert_close(actual, expected, rtol=DENSE_RTOL, atol=DENSE_ATOL)


@pytest.mark.parametrize(("head", "options"), [("classifier", {}), ("lraspp", {}), ("deeplabv3", {"aux_loss": True})],
                         ids=["classifier", "lraspp", "deeplabv3-aux"])
def test_dense_models_equal_eager_at_any_size(head, options):
    torch.manual_seed(0)
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=5, **options).eval()
    fast = vertebra.optimize(model, backend="openvino", example_size=(64, 64))
    assert isinstance(fast, OpenVINOModule) and fast.optimization_report["backend"] == "openvino"
    for shape in SIZES:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = model(x)
        _assert_same(fast(x), expected)
    static = fast.engine._static[(2, 3, 72, 96)]
    assert static is not None and static.chunks == _chunks(2)  # 2 cores: one image per stream


def test_results_are_the_callers_and_inputs_may_be_any_layout():
    """A static model writes into fresh tensors: the next call must not overwrite what the last returned."""
    torch.manual_seed(0)
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=5).eval()
    fast = vertebra.optimize(model, backend="openvino", example_size=(64, 64))
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    results = [fast(a), fast(a), fast(b).clone(), fast(a)]  # calls 2-4 run the static model
    with torch.no_grad():
        expected_a, expected_b = model(a), model(b)
    for result, expected in zip(results, [expected_a, expected_a, expected_b, expected_a]):
        _assert_same(result, expected)
    _assert_same(fast(b.to(memory_format=torch.channels_last)), expected_b)
    _assert_same(fast(b.double()), expected_b)


def test_engine_keeps_a_few_static_shapes():
    torch.manual_seed(0)
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=5).eval()
    engine = vertebra.optimize(model, backend="openvino", example_size=(64, 64)).engine
    assert isinstance(engine, OpenVINOEngine)
    sizes = [32 + 8 * i for i in range(MAX_STATIC_SHAPES + 1)]
    for size in sizes:
        x = torch.rand(1, 3, size, size)
        engine(x)
        assert (1, 3, size, size) not in engine._static  # the first call of a shape runs the dynamic model
        engine(x)
    assert list(engine._static) == [(1, 3, s, s) for s in sizes[1:]]  # the oldest went first


@pytest.mark.slow
def test_detector_equals_eager_per_image_and_batched():
    model = _detector("fasterrcnn_fpn", "mobilenet_v3_small")
    fast = vertebra.optimize(model, backend="openvino", example_size=(64, 80))
    images = _images()
    with torch.no_grad():
        expected = [model([image])[0] for image in images]   # each image alone, as the graph runs it
    for run in (fast(images), [fast([image])[0] for image in images], [fast([image])[0] for image in images],
                fast(torch.stack(images[:4]))):
        for want, got in zip(expected, run):
            assert set(got) == {"boxes", "scores", "labels"}
            assert_same_detections(want, [got["boxes"], got["scores"], got["labels"]], "optimize(openvino)")


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "vertebra\[deploy\]"'):
        vertebra.optimize(nn.Conv2d(3, 4, 3), backend="openvino")


def test_backend_and_options_are_checked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    with pytest.raises(ConfigError, match="unknown optimize backend 'tensorrt'"):
        vertebra.optimize(model, backend="tensorrt")
    with pytest.raises(ConfigError, match="takes only example_size"):
        vertebra.optimize(model, backend="openvino", fuse=False)
    assert vertebra.optimize(model).optimization_report["folded_bn"] == 1  # the default is the torch path
