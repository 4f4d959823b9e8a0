"""Quantization-aware training through ``vertebra train``: int8 artifact, freezes, resume after a kill.

The tiny LR-ASPP config of the engine tests (MobileNetV3-Small, 64 px, 12 shapes images, batch 4:
three steps an epoch, two epochs), with ``quantization: {mode: qat}``; both freezes start in the
second epoch, in which the kill stops the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_helpers import sigterm_at, tiny  # noqa: E402

import vertebra  # noqa: E402
from vertebra.engine import train  # noqa: E402
from vertebra.errors import ConfigError  # noqa: E402
from vertebra.weights.artifact import read_artifact  # noqa: E402

QAT = {"mode": "qat", "calibration_batches": 2, "freeze_bn_epoch": 1, "freeze_quantizers_epoch": 1}


def qat_config(**quantization):
    config = tiny("semantic", epochs=2, batch_size=4, optimizer={"name": "sgd", "lr": 0.05},
                  quantization={**QAT, **quantization})
    config["data"]["num_train"] = 12
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("qat")
    result = train(qat_config(), out_dir=out, progress=False)
    return out, result


@pytest.mark.slow
def test_qat_writes_an_int8_artifact_that_predicts(uninterrupted, tmp_path):
    out, result = uninterrupted
    artifact = read_artifact(out / "model.safetensors")
    assert artifact.graph is not None and artifact.graph.precision == "int8"
    info = artifact.graph.info
    assert info["method"].startswith("quantization-aware") and info["ops"]["int8_total"] > 0, info
    float_model = vertebra.load_model(out / "model.safetensors")     # the float keys load strictly
    assert not any("nncf" in key or "quantizer" in key for key in float_model.state_dict())
    predictor = vertebra.Predictor(out)
    assert predictor.runtime == "openvino"
    summary = predictor.predict_to(tmp_path / "pred", out / "data" / "val", overlays=False)
    assert summary["predicted"] == summary["images"] > 0


def test_freezes_stop_batchnorm_statistics_and_quantizer_ranges_from_their_epochs():
    from vertebra import registry
    from vertebra.engine.config import QuantizationConfig
    from vertebra.engine.qat import apply_freezes, prepare_qat, quantizer_ranges

    torch.manual_seed(0)
    model = registry.build("lraspp", backbone="mobilenet_v3_small", num_classes=3, inter_channels=16)
    model, float_keys = prepare_qat(model, [torch.rand(1, 3, 64, 64) for _ in range(2)])
    settings = QuantizationConfig(mode="qat", freeze_bn_epoch=1, freeze_quantizers_epoch=2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ranges = quantizer_ranges(model, float_keys)
    assert norms and ranges
    for epoch, bn_frozen, ranges_frozen in [(0, False, False), (1, True, False), (2, True, True)]:
        model.train()
        apply_freezes(model, settings, epoch, float_keys)
        assert all(not norm.training for norm in norms) == bn_frozen and any(n.training for n in norms) != bn_frozen
        assert all(not p.requires_grad for p in ranges) == ranges_frozen
        assert all(p.requires_grad for name, p in model.named_parameters() if name in float_keys)
    before = [n.running_mean.clone() for n in norms]
    model(torch.rand(2, 3, 64, 64))["out"].sum().backward()
    assert all(torch.equal(a, n.running_mean) for a, n in zip(before, norms))   # frozen statistics
    assert all(p.grad is None for p in ranges)                                   # frozen ranges


@pytest.mark.slow
def test_qat_resumes_after_a_kill_to_the_same_weights(uninterrupted, tmp_path):
    out, _ = uninterrupted
    run = tmp_path / "run"
    stopped = train(qat_config(), out_dir=run, progress=False, on_step=sigterm_at(1, 1))   # stops mid-epoch 2 (after its 2nd step)
    assert stopped.stopped_by == "SIGTERM"
    resumed = train(qat_config(), out_dir=run, progress=False, resume=True)
    assert resumed.epochs_done == 2
    a = torch.load(run / "last.pth", weights_only=True)["model"]
    b = torch.load(out / "last.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(("change", "match"), [
    ({"task": "detection"}, "covers tasks classification, semantic"),
    ({"ema": 0.9}, "set ema: null"),
])
def test_qat_refuses_what_it_cannot_do_before_training(change, match, tmp_path):
    config = {**tiny("detection" if change.get("task") else "semantic"), "quantization": {"mode": "qat"}, **change}
    with pytest.raises(ConfigError, match=match):
        train(config, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_bad_quantization_setting_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match="quantization.freeze_bn_epoch"):
        train(qat_config(freeze_bn_epoch=-1), out_dir=tmp_path / "run", progress=False)
