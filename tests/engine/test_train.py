"""One tiny train + eval per task type, through the real registry, data and metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vertebra.engine import evaluate, train
from vertebra.engine.report import read_jsonl

from engine_helpers import tiny, write_image_folder

EXPECTED_METRICS = {
    "detection": {"AP", "AP50", "AP75"},
    "instance": {"AP", "AP50", "segm_AP", "segm_AP50"},
    "semantic": {"mIoU", "pixel_acc"},
    "classification": {"top1"},
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


def test_jsonl_log_is_json_per_line(tmp_path):
    out = tmp_path / "run"
    train(tiny("semantic", epochs=2, eval_every=2), out_dir=out, progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records if r["kind"] == "train"] == [1, 2]
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [2]      # eval_every=2
    train_record = next(r for r in records if r["kind"] == "train")
    assert {"loss", "loss_out", "lr", "images_per_s", "seconds", "step"} <= set(train_record)
