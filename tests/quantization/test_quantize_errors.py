"""Bad input to int8 gets a typed error naming what to do, and nothing is half-written."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

import vertebra
from quantize_helpers import PREPROCESSING, float_artifact
from vertebra.cli import main
from vertebra.errors import ArtifactError, ConfigError, MissingExtraError, QuantizationError
from vertebra.quantization.calibration import MIN_SAMPLES, calibration_inputs


def _corrupt(folder, count, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        (folder / f"broken{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 4)
    return folder


def test_an_empty_calibration_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizationError, match="no images in"):
        calibration_inputs(tmp_path / "empty", PREPROCESSING, samples=16)


def test_a_folder_of_unreadable_images_names_them(tmp_path):
    with pytest.raises(QuantizationError, match=r"0 readable image\(s\).*unreadable: broken0.png"):
        calibration_inputs(_corrupt(tmp_path / "bad", 10), PREPROCESSING, samples=16)


def test_too_few_readable_images_are_refused_with_the_count(calibration, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for image in sorted(calibration.iterdir())[:5]:
        shutil.copy(image, folder)
    _corrupt(folder, 3)
    with pytest.raises(QuantizationError, match=rf"5 readable image\(s\).*at least {MIN_SAMPLES}.*broken"):
        calibration_inputs(folder, PREPROCESSING, samples=16)


@pytest.mark.parametrize("samples", [0, 4, True, "16"])
def test_too_few_samples_asked_is_refused(calibration, samples):
    with pytest.raises(QuantizationError, match=f"at least {MIN_SAMPLES}"):
        calibration_inputs(calibration, PREPROCESSING, samples=samples)


def test_fewer_images_than_asked_are_all_used_with_a_warning(calibration):
    with pytest.warns(UserWarning, match="fewer than the 300 asked"):
        found = calibration_inputs(calibration, PREPROCESSING, samples=300)
    assert len(found.inputs) == 16 and found.inputs[0].shape == (1, 3, 64, 64)


def test_a_missing_path_is_a_quantization_error(tmp_path):
    with pytest.raises(QuantizationError, match="does not exist"):
        calibration_inputs(tmp_path / "nowhere", PREPROCESSING, samples=16)


def test_a_training_config_calibrates_on_its_training_images(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("task: semantic\nmodel: {head: lraspp, backbone: mobilenet_v3_small}\n"
                      "data: {format: shapes, num_train: 9, num_val: 2, image_size: 48}\n")
    with pytest.warns(UserWarning, match="9 images in the training images of"):
        found = calibration_inputs(config, PREPROCESSING, samples=16)
    assert len(found.names) == 9 and found.inputs[0].shape == (1, 3, 64, 64)


def test_a_missing_extra_names_the_install_command(calibration, tmp_path, monkeypatch):
    source = float_artifact("lraspp", "mobilenet_v3_small", torch.rand(2, 3, 64, 64), tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingExtraError, match=r'pip install "vertebra\[quantize\]"'):
        vertebra.quantize(source, calibration, samples=16)


def test_a_model_with_no_int8_layer_is_refused(quantized, calibration, tmp_path, monkeypatch):
    """A quantizer that quantizes nothing (here: hands back the float graph) is caught by the count
    of what the compiled model executes in int8."""
    from vertebra.quantization import api
    from vertebra.quantization.openvino_int8 import float_graph

    def quantizes_nothing(model, inputs):
        converted = float_graph(model, inputs[0], tmp_path)
        return converted, converted
    model, _, _ = quantized("lraspp", "mobilenet_v3_small")
    monkeypatch.setattr(api, "quantize_for_openvino", quantizes_nothing)
    with pytest.raises(QuantizationError, match="no layer .* executes in int8"):
        vertebra.quantize(model, calibration, samples=8)


def test_an_int8_artifact_is_not_quantized_again(quantized, calibration):
    _, _, path = quantized("lraspp", "mobilenet_v3_small")
    with pytest.raises(QuantizationError, match="already int8"):
        vertebra.quantize(path, calibration, samples=16)


def test_an_int8_artifact_refuses_another_runtime(quantized):
    _, _, path = quantized("lraspp", "mobilenet_v3_small")
    for runtime in ("torch", "onnxruntime"):
        with pytest.raises(ConfigError, match="int8 model for openvino.*--runtime openvino"):
            vertebra.Predictor(path, runtime=runtime)


def test_an_int8_artifact_exports_to_openvino_only(quantized, tmp_path, capsys):
    _, _, path = quantized("lraspp", "mobilenet_v3_small")
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "exports as --format openvino only" in capsys.readouterr().err
    assert main(["export", str(path), "--format", "openvino", "--static", "--out", str(tmp_path / "m.xml")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_int8_graph_is_refused(quantized, tmp_path):
    _, _, path = quantized("lraspp", "mobilenet_v3_small")
    data = bytearray(path.read_bytes())
    at = data.index(b"<net ")   # inside the embedded model.xml
    data[at + 1] ^= 0x01
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        vertebra.load_model(damaged)


def test_the_cli_writes_the_artifact_and_report_and_never_replaces_one(quantized, calibration, tmp_path, capsys):
    model, _, _ = quantized("classifier", "mobilenet_v3_small")
    source = tmp_path / "float.safetensors"
    from vertebra.weights.artifact import save_artifact

    save_artifact(source, model, task=model.artifact.task, class_names=model.artifact.class_names,
                  preprocessing=model.artifact.preprocessing)
    out = tmp_path / "int8"
    assert main(["quantize", str(source), "--calibration", str(calibration), "--out", str(out),
                 "--samples", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "quantization.json"]
    report = json.loads((out / "quantization.json").read_text())
    assert report["ops"]["int8_total"] == report["weighted_modules"] and report["calibration"]["samples"] == 8
    assert "weighted layers in int8" in capsys.readouterr().out
    before = (out / "model.safetensors").read_bytes()
    assert main(["quantize", str(source), "--calibration", str(calibration), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


def test_a_failed_cli_run_leaves_nothing_in_out(tmp_path, capsys):
    source = float_artifact("lraspp", "mobilenet_v3_small", torch.rand(2, 3, 64, 64), tmp_path / "m.safetensors")
    _corrupt(tmp_path / "bad", 9)
    assert main(["quantize", str(source), "--calibration", str(tmp_path / "bad"), "--out",
                 str(tmp_path / "out")]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
