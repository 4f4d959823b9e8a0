"""``Predictor(runtime=...)`` on the exported runtimes gives the torch runtime's results.

The runners live in ``vertebra.deploy.runtimes``; onnxruntime and openvino are test dependencies
(the ``deploy`` extra), so these run, never skip.  The two runtimes of a task share a workdir, as
two predictors of one artifact would: the OpenVINO file is converted from the ONNX file, so whichever
runs second reuses that ONNX export instead of tracing the model again.
"""

from __future__ import annotations

import pytest
import torch

from vertebra.deploy import Predictor

from deploy_helpers import mixed_folder


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime-exports")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("task", ["classification", "semantic", "detection"])
def test_runtime_results_equal_torch(tmp_path, artifacts, workdirs, runtime, task):
    mixed_folder(tmp_path / "images")
    threshold = {"detection": 0.0}.get(task)
    eager = Predictor(artifacts[task], threshold=threshold).predict(tmp_path / "images")
    other = Predictor(artifacts[task], runtime=runtime, threshold=threshold,
                      workdir=workdirs / task).predict(tmp_path / "images")
    assert [p.name for p in eager] == [p.name for p in other] and len(other.failures) == 1
    for a, b in zip(eager, other):
        for key, value in a.output.items():
            assert b.output[key].shape == value.shape, (a.name, key)
            if key == "mask":      # per-pixel argmax: a near tie may flip a few pixels
                assert (value != b.output[key]).float().mean() <= 0.01, a.name
            elif value.is_floating_point():
                torch.testing.assert_close(b.output[key], value, rtol=1e-3, atol=1e-3)
            else:
                assert torch.equal(b.output[key], value), (a.name, key)
