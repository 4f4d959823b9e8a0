"""Ground truth on overlays: drawn where the annotation file has the image, nowhere else; bad files refused
before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vertebra import cli
from vertebra.deploy import Predictor
from vertebra.deploy import overlay as overlay_module
from vertebra.deploy.truth import GT_COLOUR
from vertebra.errors import ConfigError, DataError

SIZE = 64
SCALE = 384 / SIZE                      # overlays enlarge a 64 px image to a 384 px shorter side
BOX = [16, 16, 24, 24]                  # COCO x, y, w, h of the one annotation
SQUARE = [[16, 16, 40, 16, 40, 40, 16, 40]]


def _images(root, names=("a.png", "b.png")):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((SIZE, SIZE, 3), 120, np.uint8)).save(root / name)
    return root


def _truth(path, records=(("a.png", SIZE, SIZE),), category="circle"):
    """An annotation file with one box (and square region) on the first record, sparse ids on purpose."""
    images = [{"id": 10 + i, "file_name": name, "width": width, "height": height}
              for i, (name, width, height) in enumerate(records)]
    annotations = [{"id": 1, "image_id": 10, "category_id": 7, "bbox": BOX, "segmentation": SQUARE,
                    "area": 576.0, "iscrowd": 0}]
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 7, "name": category}]}))
    return path


def _no_detections(batch):
    return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
            for _ in range(len(batch))]


def _gt_pixels(path):
    """Where the GT colour is in the image area of an overlay (x, y in enlarged image pixels), and
    whether it is in the legend beside it."""
    picture = np.asarray(Image.open(path).convert("RGB"))
    header = picture.shape[0] - SIZE * SCALE            # the header row above the image (a short legend)
    found = (picture == GT_COLOUR).all(axis=-1)
    image_area = found[int(header):, :int(SIZE * SCALE)]
    ys, xs = np.nonzero(image_area)
    return xs, ys, bool(found[:, int(SIZE * SCALE):].any())


def _assert_inside_the_box_only(xs, ys, label_room=40):
    x0, y0, x1, y1 = (v * SCALE for v in (BOX[0], BOX[1], BOX[0] + BOX[2], BOX[1] + BOX[3]))
    assert xs.size, "the ground truth is drawn"
    assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.max() <= y1 + 2
    assert ys.min() >= y0 - label_room                    # its label sits just above the box
    assert ((ys >= y1 - 3) & (ys <= y1 + 2)).any() and ((xs >= x1 - 3) & (xs <= x1 + 2)).any()   # the edges
    interior = (xs > x0 + 6) & (xs < x1 - 6) & (ys > y0 + 6) & (ys < y1 - 6)
    assert not interior.any(), "the inside of the box stays the prediction's"


def test_detection_ground_truth_is_drawn_on_the_image_that_has_it_and_no_other(tmp_path, artifacts):
    images = _images(tmp_path / "images")
    predictor = Predictor(artifacts["detection"])
    predictor.runner = _no_detections                     # nothing predicted: every GT-coloured pixel is GT
    summary = predictor.predict_to(tmp_path / "out", images, ground_truth=_truth(tmp_path / "gt.json"))

    xs, ys, in_legend = _gt_pixels(tmp_path / "out" / "overlays" / "a.png")
    _assert_inside_the_box_only(xs, ys)
    assert in_legend                                      # the legend says which marks are ground truth
    xs, ys, in_legend = _gt_pixels(tmp_path / "out" / "overlays" / "b.png")
    assert not xs.size and not in_legend                  # no record: no ground truth, and no error
    assert summary["ground_truth"] == {"file": str(tmp_path / "gt.json"), "drawn": 1, "not_drawn": {}}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ground_truth"]["drawn"] == 1


def test_without_ground_truth_no_overlay_has_its_colour(tmp_path, artifacts):
    images = _images(tmp_path / "images")
    predictor = Predictor(artifacts["detection"], threshold=0.0)
    summary = predictor.predict_to(tmp_path / "out", images)
    assert summary["ground_truth"] is None
    for name in ("a.png", "b.png"):
        xs, _, in_legend = _gt_pixels(tmp_path / "out" / "overlays" / name)
        assert not xs.size and not in_legend


def test_semantic_ground_truth_is_the_outline_of_each_region(tmp_path, artifacts):
    images = _images(tmp_path / "images")
    Predictor(artifacts["semantic"]).predict_to(tmp_path / "out", images, ground_truth=_truth(tmp_path / "gt.json"))
    xs, ys, in_legend = _gt_pixels(tmp_path / "out" / "overlays" / "a.png")
    _assert_inside_the_box_only(xs, ys)
    assert in_legend
    xs, _, in_legend = _gt_pixels(tmp_path / "out" / "overlays" / "b.png")
    assert not xs.size and not in_legend


def test_classification_ground_truth_is_the_true_label_in_the_header(tmp_path, artifacts, monkeypatch):
    images = _images(tmp_path / "images")
    composed = {}
    compose = overlay_module._compose

    def spy(image, header, legend, font):
        composed[len(composed)] = (header, legend)
        return compose(image, header, legend, font)

    monkeypatch.setattr(overlay_module, "_compose", spy)
    Predictor(artifacts["classification"]).predict_to(tmp_path / "out", images,
                                                      ground_truth=_truth(tmp_path / "gt.json", category="red"))
    (a_header, a_legend), (b_header, b_legend) = composed[0], composed[1]
    assert a_header.endswith("true: red") and ("ground truth: red", GT_COLOUR) in a_legend
    assert "true" not in b_header and all(colour != GT_COLOUR for _, colour in b_legend)


def test_images_are_matched_by_base_name_and_misplaced_truth_is_not_drawn(tmp_path, artifacts, monkeypatch):
    root = tmp_path / "images"
    _images(root / "sub", ("a.png", "b.png"))
    rotated = Image.fromarray(np.full((SIZE, SIZE, 3), 120, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 3                                      # 180 degrees: same size, every box elsewhere
    rotated.save(root / "c.jpg", exif=exif)
    gt = _truth(tmp_path / "gt.json", records=(("a.png", SIZE, SIZE), ("b.png", 32, 32), ("c.jpg", SIZE, SIZE)))
    predictor = Predictor(artifacts["detection"])
    predictor.runner = _no_detections
    summary = predictor.predict_to(tmp_path / "out", root, ground_truth=gt)

    truth = summary["ground_truth"]
    assert truth["drawn"] == 1                            # sub/a.png is the record a.png
    assert set(truth["not_drawn"]) == {"sub/b.png", "c.jpg"}
    assert "32x32" in truth["not_drawn"]["sub/b.png"] and "EXIF orientation 3" in truth["not_drawn"]["c.jpg"]
    _assert_inside_the_box_only(*_gt_pixels(tmp_path / "out" / "overlays" / "sub" / "a.png")[:2])
    assert not _gt_pixels(tmp_path / "out" / "overlays" / "sub" / "b.png")[0].size


def test_cli_ground_truth_flag(tmp_path, artifacts, capsys):
    images = _images(tmp_path / "images")
    gt = _truth(tmp_path / "gt.json")
    code = cli.main(["predict", str(artifacts["instance"]), "--images", str(images), "--out", str(tmp_path / "out"),
                     "--ground-truth", str(gt), "--no-progress"])
    assert code == 0
    assert f"ground truth from {gt} drawn on 1 of 2 overlay(s)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ground_truth"]["drawn"] == 1
    assert "--ground-truth ANNOTATIONS.json" in _help(capsys)


def _help(capsys):
    try:
        cli.main(["predict", "--help"])
    except SystemExit:
        pass
    return capsys.readouterr().out


@pytest.mark.parametrize("content, match", [
    (None, r"ground truth: annotation file .* does not exist"),
    ("{not json", "is not valid JSON"),
    ({"images": [], "categories": []}, "no images"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "categories": [{"id": 1, "name": "x"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]}, "category_id 2"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "categories": [{"id": 1, "name": "x"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0]}]}, "4 numbers"),
])
def test_a_bad_annotation_file_is_a_data_error_and_nothing_is_written(tmp_path, artifacts, capsys, content, match):
    images = _images(tmp_path / "images")
    gt = tmp_path / "gt.json"
    if content is not None:
        gt.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError, match=match):
        Predictor(artifacts["detection"]).predict_to(tmp_path / "out", images, ground_truth=gt)
    assert cli.main(["predict", str(artifacts["detection"]), "--images", str(images), "--out",
                     str(tmp_path / "out"), "--ground-truth", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ground truth: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_ground_truth_without_overlays_is_refused(tmp_path, artifacts):
    images = _images(tmp_path / "images")
    with pytest.raises(ConfigError, match="drop --no-overlays"):
        Predictor(artifacts["detection"]).predict_to(tmp_path / "out", images, overlays=False,
                                                     ground_truth=_truth(tmp_path / "gt.json"))
    assert not (tmp_path / "out").exists()
