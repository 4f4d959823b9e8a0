"""Bad input to load_model, the Predictor and 'vertebra predict': typed errors that say what to do."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from vertebra import cli, load_model, registry
from vertebra.deploy import Predictor
from vertebra.errors import ArtifactError, ConfigError, DataError, VertebraError
from vertebra.weights.artifact import Preprocessing, save_artifact

from deploy_helpers import mixed_folder


def test_missing_file_folder_without_artifact_and_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ArtifactError, match="without model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "notes.safetensors").write_text("hello")
    with pytest.raises(ArtifactError, match="not a readable model artifact"):
        Predictor(tmp_path / "notes.safetensors")


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path):
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=3)
    other = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=5)
    save_artifact(tmp_path / "m.safetensors", other.state_dict(), config=model.config, task="classification",
                  class_names=["a", "b", "c"], preprocessing=Preprocessing("square", 32))
    with pytest.raises(ArtifactError, match="do not fit"):
        load_model(tmp_path / "m.safetensors")


def test_a_model_without_an_artifact_description_is_refused():
    with pytest.raises(ArtifactError, match="load_model"):
        Predictor(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan"), "0.5", True])
def test_bad_threshold(artifacts, threshold):
    with pytest.raises(ConfigError, match="threshold"):
        Predictor(artifacts["detection"], threshold=threshold)


def test_semantic_models_take_no_threshold(artifacts):
    with pytest.raises(ConfigError, match="no score threshold"):
        Predictor(artifacts["semantic"], threshold=0.5)


@pytest.mark.parametrize("options,match", [({"runtime": "tensorrt"}, "runtime"), ({"batch_size": 0}, "batch_size"),
                                           ({"top_k": 0}, "top_k"), ({"device": "gpu7"}, "device"),
                                           ({"runtime": "onnxruntime", "device": "cuda"}, "torch runtime only")])
def test_bad_options(artifacts, options, match):
    with pytest.raises(ConfigError, match=match):
        Predictor(artifacts["classification"], **options)


def test_a_missing_runtime_extra_names_the_install_command(artifacts, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(VertebraError, match=r'pip install "vertebra\[deploy\]"'):
        Predictor(artifacts["classification"], runtime="openvino")


def test_a_missing_image_path_is_a_data_error(artifacts, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Predictor(artifacts["classification"]).predict([tmp_path / "missing"])
    with pytest.raises(DataError, match="uint8"):
        Predictor(artifacts["classification"]).predict([torch.zeros(3, 8, 8)])


# -- the command line ---------------------------------------------------------------------------

def test_cli_predicts_reports_the_unreadable_file_and_exits_1(artifacts, tmp_path, capsys):
    mixed_folder(tmp_path / "images")
    code = cli.main(["predict", str(artifacts["detection"]), "--images", str(tmp_path / "images"),
                     "--out", str(tmp_path / "out"), "--threshold", "0.1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "could not read broken.png" in captured.err
    assert "predicted 6 of 7 image(s), 1 unreadable" in captured.out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["threshold"] == 0.1 and summary["failures"][0]["file_name"] == "broken.png"


def test_cli_exit_0_when_every_image_is_read(artifacts, tmp_path, capsys):
    mixed_folder(tmp_path / "images")
    (tmp_path / "images" / "broken.png").unlink()
    code = cli.main(["predict", str(artifacts["classification"]), "--images", str(tmp_path / "images" / "rgb.png"),
                     str(tmp_path / "images" / "grey.png"), "--out", str(tmp_path / "out"), "--top-k", "2",
                     "--no-overlays"])
    assert code == 0 and "predicted 2 of 2" in capsys.readouterr().out
    assert not (tmp_path / "out" / "overlays").exists()


@pytest.mark.parametrize("extra,match", [
    (["--threshold", "2"], "threshold"),
    (["--runtime", "tensorrt"], "runtime"),
    (["--batch-size", "0"], "batch_size"),
])
def test_cli_bad_options_are_one_error_line_and_exit_2(artifacts, tmp_path, capsys, extra, match):
    code = cli.main(["predict", str(artifacts["detection"]), "--images", str(tmp_path), "--out",
                     str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and match in err and len(err.strip().splitlines()) == 1


def test_cli_missing_model_and_missing_images(artifacts, tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "none.safetensors"), "--images", str(tmp_path),
                     "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["predict", str(artifacts["detection"]), "--images", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "out")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()      # nothing written for a typo in --images


def test_a_non_torch_runtime_gets_its_runner_from_deploy_runtimes(artifacts, monkeypatch, tmp_path):
    import sys
    import types

    calls = []

    def make_runner(model, artifact, runtime, workdir):
        calls.append((artifact.task, runtime, workdir))
        return lambda batch: model(batch) * 0 + torch.arange(3.0)     # a runtime that always says "red"

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())   # the extra "is installed"
    monkeypatch.setitem(sys.modules, "vertebra.deploy.runtimes", types.SimpleNamespace(make_runner=make_runner))
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    run = Predictor(artifacts["classification"], runtime="onnxruntime", workdir=tmp_path).predict([image])
    assert calls == [("classification", "onnxruntime", tmp_path)]
    assert run.predictions[0].output["labels"][0] == 2

