"""`vertebra data shapes` and `vertebra data check` through the real CLI entry point."""

from __future__ import annotations

import json

from vertebra.cli import main


def test_shapes_command_writes_the_data_set(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path), "--num-train", "3", "--num-val", "2",
                 "--size", "48", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "train     3 images" in out and "instances_val.json" in out and "circle, square, triangle" in out
    data = json.loads((tmp_path / "annotations" / "instances_val.json").read_text())
    assert len(data["images"]) == 2 and data["images"][0]["width"] == 48 and data["info"]["seed"] == 4


def test_check_command_reports_ok_and_errors(tmp_path, capsys):
    main(["data", "shapes", "--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "32"])
    capsys.readouterr()
    ann_file = tmp_path / "annotations" / "instances_train.json"
    assert main(["data", "check", str(ann_file), "--images", str(tmp_path / "train")]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 images")
    (tmp_path / "train" / "000002.jpg").write_bytes(b"broken")
    assert main(["data", "check", str(ann_file), "--images", str(tmp_path / "train")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: image file") and "000002.jpg" in last and "image id 2" in last


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path), "--num-val", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: generate_shapes: num_val must be an integer >= 1, got 0"
    assert main(["data"]) == 2  # no action: argparse usage error


def test_check_command_refuses_a_malformed_record_in_one_line(tmp_path, capsys):
    main(["data", "shapes", "--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "32"])
    capsys.readouterr()
    ann_file = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(ann_file.read_text())
    data["annotations"][0]["area"] = "big"  # passed the check before, then crashed COCOeval after the epoch
    ann_file.write_text(json.dumps(data))
    assert main(["data", "check", str(ann_file), "--images", str(tmp_path / "train")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: annotation file") and "instances_train.json" in last
    assert f"annotation id {data['annotations'][0]['id']}" in last and "area 'big'" in last


def test_check_command_understands_box_only_detection_data(tmp_path, capsys):
    """Valid box-only COCO is detection data: counted objects, exit 0 even with --strict (issue 16)."""
    main(["data", "shapes", "--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--size", "32"])
    capsys.readouterr()
    ann_file = tmp_path / "annotations" / "instances_train.json"
    data = json.loads(ann_file.read_text())
    objects = len(data["annotations"])
    for ann in data["annotations"]:
        del ann["segmentation"]
    ann_file.write_text(json.dumps(data))
    assert main(["data", "check", str(ann_file), "--images", str(tmp_path / "train"), "--strict"]) == 0
    assert f"{objects} objects (boxes: detection)" in capsys.readouterr().out and objects > 0
    # asked to check it for instance segmentation, the missing masks are what --strict refuses
    assert main(["data", "check", str(ann_file), "--images", str(tmp_path / "train"), "--strict",
                 "--task", "instance"]) == 2
    assert "unusable annotation" in capsys.readouterr().err
