"""One tiny train + eval per task type, through the real registry, data and metrics."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from vertebra.engine import evaluate, train
from vertebra.engine.report import read_jsonl
from vertebra.weights.artifact import Preprocessing, read_artifact

from engine_helpers import tiny, write_image_folder

EXPECTED_METRICS = {
    "detection": {"AP", "AP50", "AP75"},
    "instance": {"AP", "AP50", "segm_AP", "segm_AP50"},
    "semantic": {"mIoU", "pixel_acc"},
    "classification": {"top1"},
}

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
EXPECTED_PREPROCESSING = {     # the tiny configs: detection keeps sizes, semantic 64 px, classification 32 px
    "detection": Preprocessing("none"),
    "instance": Preprocessing("none"),
    "semantic": Preprocessing("square", 64, **IMAGENET),
    "classification": Preprocessing("shorter_crop", 37, 32, **IMAGENET),
}


@pytest.mark.parametrize("task", ["detection", "instance", "semantic", "classification"])
def test_train_and_evaluate_each_task(tmp_path, task):
    config = tiny(task)
    if task == "classification":
        write_image_folder(tmp_path / "images")
        config["data"]["root"] = str(tmp_path / "images")
    out = tmp_path / "run"
    result = train(config, out_dir=out, progress=False)

    assert EXPECTED_METRICS[task] <= set(result.metrics)
    assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in result.metrics.values())
    assert result.images_per_s > 0 and result.epochs_done == 1
    for name in ("last.pth", "metrics.jsonl", "curves.png", "predictions.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    records = read_jsonl(out / "metrics.jsonl")
    kinds = [r["kind"] for r in records]
    assert kinds.count("train") == 1 and kinds.count("eval") == 1 and "step" in kinds
    assert records[-1]["kind"] == "eval"
    assert {k: records[-1][k] for k in result.metrics} == pytest.approx(result.metrics)
    # the model config was completed from the data: background + the shapes' 3 classes, or 3 colours
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["model_config"]["num_classes"] == (3 if task == "classification" else 4)

    # evaluating the checkpoint again, separately, reproduces the numbers of the run
    assert evaluate(config, out / "last.pth") == pytest.approx(result.metrics)

    # the model artifact: the same weights, the data's class names, the evaluation preprocessing
    artifact = read_artifact(out / "model.safetensors")
    assert artifact.task == task and artifact.config == result.model.config
    assert artifact.class_names == (("blue", "green", "red") if task == "classification"
                                    else ("background", "circle", "square", "triangle"))
    assert artifact.preprocessing == EXPECTED_PREPROCESSING[task]
    # detectors record the data's COCO category id of each label (a header field, not metadata)
    assert artifact.category_ids == ((None, 1, 2, 3) if task in ("detection", "instance") else None)
    assert "category_ids" not in artifact.metadata
    assert artifact.metadata["metrics"] == pytest.approx(result.metrics)
    model_state = result.model.state_dict()
    assert artifact.state_dict.keys() == model_state.keys()
    assert all(torch.equal(artifact.state_dict[k], model_state[k].cpu()) for k in model_state)


def test_jsonl_log_is_json_per_line(tmp_path):
    out = tmp_path / "run"
    train(tiny("semantic", epochs=2, eval_every=2), out_dir=out, progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records if r["kind"] == "train"] == [1, 2]
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [2]      # eval_every=2
    train_record = next(r for r in records if r["kind"] == "train")
    assert {"loss", "loss_out", "lr", "images_per_s", "seconds", "step"} <= set(train_record)


def test_coco_format_with_explicit_paths_and_worker_processes(tmp_path):
    from vertebra.data import generate_shapes

    generate_shapes(tmp_path / "coco", num_train=4, num_val=2, image_size=64, seed=3)
    config = tiny("semantic")
    config["data"] = {"format": "coco", "root": str(tmp_path / "coco"), "train_images": "train",
                      "train_annotations": "annotations/instances_train.json", "val_images": "val",
                      "val_annotations": "annotations/instances_val.json", "size": 64, "num_workers": 1}
    first = train(config, out_dir=tmp_path / "a", progress=False)
    second = train(config, out_dir=tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "data").exists()                     # nothing generated for format=coco
    a, b = (torch.load(tmp_path / run / "last.pth", weights_only=True)["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)                    # worker seeds follow (seed, epoch)
    assert first.metrics == second.metrics


def test_init_weights_starts_from_a_previous_run(tmp_path):
    from vertebra.engine import parse_config, prepare_run
    from vertebra.engine.finetune import load_start_weights

    train(tiny("semantic"), out_dir=tmp_path / "first", progress=False)
    previous = torch.load(tmp_path / "first" / "last.pth", weights_only=True)["model"]
    config = parse_config(tiny("semantic", init_weights=str(tmp_path / "first" / "last.pth")))
    model = prepare_run(config, tmp_path / "second").model
    assert load_start_weights(model, config) is None          # the strict load: no partial report
    assert all(torch.equal(model.state_dict()[k], v) for k, v in previous.items())


@pytest.mark.parametrize("task, data, message", [
    ("classification", {"format": "shapes"}, "data.format='image_folder'"),
    ("classification", {"format": "image_folder"}, "needs data.train_images and data.val_images"),
    ("detection", {"format": "mask_folder"}, "must be 'shapes' or 'coco'"),
    ("detection", {"format": "coco", "train_images": "x"}, "needs data.train_annotations, data.val_images"),
    ("semantic", {"format": "image_folder"}, "'shapes', 'coco' or 'mask_folder'"),
    ("semantic", {"format": "mask_folder"}, "needs train_images/val_images"),
])
def test_data_sections_that_cannot_work_are_refused(tmp_path, task, data, message):
    from vertebra.engine.config import parse_config
    from vertebra.engine.tasks import task_spec
    from vertebra.errors import ConfigError

    config = parse_config({"model": {"head": "x"}, "task": task, "data": data})
    with pytest.raises(ConfigError, match=re.escape(message)):
        task_spec(task).build_data(config.data, tmp_path)


def test_model_with_too_few_classes_is_refused(tmp_path):
    from vertebra.errors import ConfigError

    config = tiny("semantic")
    config["model"]["num_classes"] = 2
    with pytest.raises(ConfigError, match="the data has 4 classes .* model predicts 2") as info:
        train(config, out_dir=tmp_path, progress=False)
    assert info.value.path == "model.num_classes"


def test_the_artifact_holds_the_ema_weights_when_the_run_averages(tmp_path):
    out = tmp_path / "run"
    result = train(tiny("semantic", ema=0.5), out_dir=out, progress=False)
    artifact = read_artifact(out / "model.safetensors")
    ema = torch.load(out / "last.pth", weights_only=True)["ema"]
    assert artifact.metadata["ema"] is True
    assert all(torch.equal(value, ema[f"module.{name}"]) for name, value in artifact.state_dict.items())
    trained = result.model.state_dict()      # the raw weights differ from their average
    assert not all(torch.equal(artifact.state_dict[k], trained[k]) for k in trained)


def test_a_failing_evaluation_keeps_the_trained_epoch(tmp_path, monkeypatch):
    """Evaluation runs after the epoch's training; if it raises, the epoch is saved before the error."""
    from vertebra.engine import loop
    from vertebra.engine import checkpoint as ckpt

    def broken(*args, **kwargs):
        raise RuntimeError("a metric's bug")

    monkeypatch.setattr(loop, "run_evaluation", broken)
    with pytest.raises(RuntimeError, match="a metric's bug"):
        train(tiny("semantic"), out_dir=tmp_path / "run", progress=False)
    state = ckpt.load_training_checkpoint(tmp_path / "run" / "last.pth")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
