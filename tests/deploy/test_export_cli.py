"""``vertebra export`` (artifact -> file + JSON sidecar) and ``make_runner`` (runtimes with eager's outputs)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from vertebra import registry
from vertebra.cli import main
from vertebra.deploy import runtimes
from vertebra.deploy.runtimes import make_runner
from vertebra.errors import ExportError, VertebraError
from vertebra.weights.artifact import Preprocessing, read_artifact, save_artifact

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    torch.manual_seed(0)
    model = registry.build("lraspp", backbone="mobilenet_v3_small", num_classes=3).eval()
    path = tmp_path_factory.mktemp("artifact") / "model.safetensors"
    save_artifact(path, model, task="semantic", class_names=["bg", "circle", "square"],
                  preprocessing=Preprocessing("square", 64, mean=MEAN, std=STD), config=model.config,
                  category_ids=[None, 4, 11])
    return path


def test_export_writes_the_file_and_a_sidecar(artifact, tmp_path, capsys):
    out = tmp_path / "seg.pt2"
    assert main(["export", str(artifact), "--format", "pt2", "--out", str(out), "--size", "64", "64"]) == 0
    sidecar = json.loads((tmp_path / "seg.pt2.json").read_text())
    assert sidecar["class_names"] == ["bg", "circle", "square"] and sidecar["task"] == "semantic"
    assert sidecar["category_ids"] == [None, 4, 11]
    assert sidecar["preprocessing"]["mean"] == list(MEAN) and sidecar["head"] == "lraspp"
    assert sidecar["input"]["shape"] == ["N", 3, "H", "W"] and sidecar["outputs"] == ["out"]
    program = torch.export.load(str(out)).module()
    art = read_artifact(artifact)
    model = registry.build_from_config(art.config)
    model.load_state_dict(art.state_dict)
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model.eval()(x)["out"])
    assert "wrote" in capsys.readouterr().out


def test_export_static_records_the_size(artifact, tmp_path):
    out = tmp_path / "seg.pt2"
    assert main(["export", str(artifact), "--format", "pt2", "--out", str(out), "--static"]) == 0
    assert json.loads((tmp_path / "seg.pt2.json").read_text())["input"]["shape"] == ["N", 3, 64, 64]


def test_unknown_format_exits_2_naming_the_formats(artifact, capsys):
    assert main(["export", str(artifact), "--format", "tflite"]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err


def test_missing_extra_names_the_install_command(artifact, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert main(["export", str(artifact), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert 'pip install "vertebra[deploy]"' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_head_that_cannot_export_is_named(artifact, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent branch")

    monkeypatch.setattr(torch.export, "export", refuse)
    assert main(["export", str(artifact), "--format", "pt2", "--out", str(tmp_path / "m.pt2")]) == 2
    assert "head 'lraspp' cannot be exported with torch.export: RuntimeError: data-dependent branch" in \
        capsys.readouterr().err


def test_not_an_artifact_is_a_typed_error(tmp_path, capsys):
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(b"nope")
    assert main(["export", str(bogus), "--format", "pt2"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# -- runtimes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", runtimes.RUNTIMES)
def test_runner_returns_the_eager_structure(runtime, tmp_path):
    torch.manual_seed(0)
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=4).eval()
    with torch.no_grad():  # a zero-initialised last layer would compare 0 with 0
        for parameter in model.head.parameters():
            parameter.normal_(std=0.1)
    runner = make_runner(model, runtime, tmp_path, task="classification", example_size=(64, 64))
    x = torch.rand(3, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), rtol=1e-4, atol=1e-5)


def test_detection_runner_gives_one_dict_per_image(tmp_path):
    torch.manual_seed(0)
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small", num_classes=3, min_size=64,
                           max_size=96, rpn_post_nms_top_n_test=50).eval()
    runner = make_runner(model, "torch", tmp_path, example_size=(64, 80))
    assert runner.task == "detection"
    images = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        expected = model(list(images))
    actual = runner(images)
    assert [sorted(a) for a in actual] == [["boxes", "labels", "scores"]] * 2
    for got, want in zip(actual, expected):
        assert len(got["boxes"]) == len(want["boxes"])
        torch.testing.assert_close(got["scores"], want["scores"], rtol=1e-4, atol=1e-5)


def test_exports_are_cached_by_fingerprint(tmp_path, monkeypatch):
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=4).eval()
    first = make_runner(model, "torch", tmp_path, task="classification", example_size=(64, 64))
    monkeypatch.setattr(runtimes, "trace", lambda *a, **k: pytest.fail("re-exported an unchanged model"))
    assert make_runner(model, "torch", tmp_path, task="classification").path == first.path
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert runtimes.fingerprint(model) not in first.path.name


def test_a_detector_threshold_changed_after_building_changes_the_fingerprint():
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small", num_classes=3, min_size=64,
                           max_size=64).eval()
    before = runtimes.fingerprint(model)
    assert runtimes.fingerprint(model) == before          # stable: a cache that always misses is no cache
    model.roi_heads.score_thresh = 0.3                    # baked into the exported graph
    assert runtimes.fingerprint(model) != before


def test_predict_call_form_takes_the_task_from_the_artifact(artifact, tmp_path):
    art = read_artifact(artifact)
    model = registry.build_from_config(art.config)
    model.load_state_dict(art.state_dict)
    runner = make_runner(model.eval(), art, "torch", tmp_path)
    assert runner.task == "semantic" and set(runner(torch.rand(1, 3, 64, 64))) == {"out"}


def test_runner_errors_are_typed(tmp_path, monkeypatch):
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=4).eval()
    with pytest.raises(ExportError, match="unknown runtime 'tensorrt'"):
        make_runner(model, "tensorrt", tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(VertebraError, match=r'pip install "vertebra\[deploy\]"'):
        make_runner(model, "onnxruntime", tmp_path)
    runner = make_runner(model, "torch", tmp_path, example_size=(64, 64))
    with pytest.raises(ExportError, match=r"Tensor\[N, 3, H, W\]"):
        runner(torch.rand(3, 64, 64))
