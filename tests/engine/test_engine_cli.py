"""`vertebra train`, `vertebra eval` and `vertebra quickstart` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vertebra.cli import main
from vertebra.engine import _quickstart
from vertebra.weights.artifact import read_artifact
from vertebra.engine.config import load_train_config, parse_config

from engine_helpers import tiny

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def write(tmp_path, config, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name, built_in", [("quickstart_detection.yaml", _quickstart.DETECTION),
                                            ("quickstart_segmentation.yaml", _quickstart.SEGMENTATION)])
def test_shipped_configs_are_the_quickstart_configs(name, built_in):
    assert load_train_config(CONFIGS / name) == parse_config(built_in)


def test_every_shipped_train_config_parses():
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert paths
    for path in paths:
        load_train_config(path)


def test_train_then_eval_through_the_cli(tmp_path, capsys):
    path = write(tmp_path, tiny("semantic"))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--no-progress", "--set", "epochs=1"]) == 0
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "images/s" in printed and str(out) in printed
    assert printed.splitlines()[0].startswith("epoch 1/1  loss ")    # --no-progress keeps the epoch line
    assert main(["eval", str(path), "--checkpoint", str(out / "last.pth"), "--out", str(tmp_path / "ev")]) == 0
    evaluated = capsys.readouterr().out

    def rows(text):
        return [line for line in text.splitlines() if line.split()[:1] in (["mIoU"], ["pixel_acc"])]
    assert rows(evaluated) == rows(printed) and len(rows(printed)) == 2    # the same mIoU / pixel_acc rows
    assert (tmp_path / "ev" / "predictions.png").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = write(tmp_path, {**tiny("semantic"), "epoch": 3})
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "did you mean 'epochs'" in err and "Traceback" not in err
    good = write(tmp_path, tiny("semantic"), "good.yaml")
    assert main(["train", str(good), "--set", "optimizer.lr"]) == 2
    assert "key.path=value" in capsys.readouterr().err
    assert main(["eval", str(good), "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_refuses_a_checkpoint_of_another_architecture(tmp_path, capsys):
    path = write(tmp_path, tiny("semantic"))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    code = main(["eval", str(path), "--checkpoint", str(out / "last.pth"),
                 "--set", "model.backbone.name=mobilenet_v3_large"])
    assert code == 2 and "another architecture" in capsys.readouterr().err


def test_quickstart_quick_runs_the_whole_loop(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--quick", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = (out / "results.txt").read_text()
    assert table.strip() in printed
    header = table.splitlines()[0].split()
    assert header == ["model", "task", "AP", "AP50", "mIoU", "pixel_acc", "images/s", "minutes"]
    assert "fasterrcnn_fpn / mobilenet_v3_large" in table and "lraspp / mobilenet_v3_large" in table
    assert "baseline: all background" in table
    for run, task in (("detector", "detection"), ("segmenter", "semantic")):
        for name in ("last.pth", "model.safetensors", "metrics.jsonl", "curves.png", "predictions.png"):
            assert (out / run / name).stat().st_size > 0, f"{run}/{name}"
        artifact = read_artifact(out / run / "model.safetensors")       # what vertebra predict reads
        assert artifact.task == task and artifact.class_names[0] == "background"
    results = json.loads((out / "results.json").read_text())
    assert {"AP", "AP50"} <= set(results["detector"]["metrics"])
    assert {"mIoU", "pixel_acc"} <= set(results["segmenter"]["metrics"])
    floor = results["baselines"]["semantic_all_background"]
    assert 0 < floor["mIoU"] < 1 and 0 < floor["pixel_acc"] < 1
    records = [json.loads(line) for line in (out / "detector" / "metrics.jsonl").read_text().splitlines()]
    start = next(record for record in records if record["kind"] == "finetune")   # the detector starts from
    assert start["target"] == "backbone.body" and "segmenter" in start["source"]  # the segmenter's backbone
    assert not any(name.startswith("backbone.body") for name in start["reinitialised"])
