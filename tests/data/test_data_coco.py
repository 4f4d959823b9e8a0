"""CocoDetection: samples the torchvision detectors take, label remapping, and a DataError that
names the file and the record for every kind of broken data."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision import tv_tensors

from vertebra.data import CocoDetection
from vertebra.errors import DataError


def test_sample_matches_the_json(shapes):
    ds = CocoDetection(shapes.train_images, shapes.train_annotations, with_masks=True)
    assert len(ds) == 8 and ds.num_classes == 4
    assert ds.classes == ("__background__", "circle", "square", "triangle")
    raw = json.loads(shapes.train_annotations.read_text())
    for index in range(len(ds)):
        image, target = ds[index]
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 64, 64)
        image_id = target["image_id"]
        assert isinstance(image_id, int) and image_id == ds.ids[index]
        anns = sorted((a for a in raw["annotations"] if a["image_id"] == image_id), key=lambda a: a["id"])
        boxes = target["boxes"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format.name == "XYXY"
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        torch.testing.assert_close(boxes.as_subclass(torch.Tensor), expected)
        assert target["labels"].dtype == torch.int64
        assert target["labels"].tolist() == [a["category_id"] for a in anns]  # ids 1..3 map to themselves
        masks = target["masks"]
        assert isinstance(masks, tv_tensors.Mask) and masks.dtype == torch.uint8
        assert masks.shape == (len(anns), 64, 64)
        assert masks.sum((1, 2)).tolist() == [a["area"] for a in anns]  # same polygon, same raster


def test_sparse_category_ids_become_contiguous_labels(make_coco, box_ann):
    image_dir, ann_file = make_coco(
        [(5, "a.jpg", 40, 30)],
        [box_ann(1, 5, [1, 1, 10, 10], category_id=90), box_ann(2, 5, [20, 5, 10, 20], category_id=7)],
        categories=((90, "zebra"), (7, "cat")))
    ds = CocoDetection(image_dir, ann_file)
    assert ds.category_ids == (7, 90)
    assert ds.label_to_category_id == {1: 7, 2: 90}
    assert ds.classes == ("__background__", "cat", "zebra")
    _, target = ds[0]
    assert target["labels"].tolist() == [2, 1] and target["image_id"] == 5
    assert "masks" not in target


def test_image_without_annotations_gives_empty_target(make_coco):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], [])
    image, target = CocoDetection(image_dir, ann_file, with_masks=True)[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 32, 32)


def test_boxes_are_clipped_and_crowd_is_left_out(make_coco, box_ann):
    inside = [[0, 2, 6, 2, 6, 32, 0, 32]]  # polygons past the border are refused (test_data_records.py)
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)],
                                    [box_ann(1, 1, [-4, 2, 10, 40], segmentation=inside),
                                     box_ann(2, 1, [3, 3, 5, 5], iscrowd=1)])
    _, target = CocoDetection(image_dir, ann_file)[0]
    assert target["boxes"].tolist() == [[0.0, 2.0, 6.0, 32.0]]


def test_degenerate_boxes_are_skipped_with_a_count_or_refused_when_strict(make_coco, box_ann):
    anns = [box_ann(1, 1, [2, 2, 10, 10]), box_ann(2, 1, [5, 5, 0, 4]), box_ann(3, 1, [5, 5, -3, 4]),
            box_ann(4, 1, [40, 40, 5, 5], segmentation=[[30, 30, 32, 30, 32, 32]])]  # zero width, negative
    # width, entirely outside (its polygon inside: one past the border is refused, see test_data_records.py)
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], anns)
    with pytest.warns(UserWarning, match=r"skipped 3 unusable annotation\(s\).*annotation id 2"):
        ds = CocoDetection(image_dir, ann_file)
    assert ds.skipped_annotations == [2, 3, 4]
    assert ds[0][1]["boxes"].shape == (1, 4)
    with pytest.raises(DataError, match=r"instances\.json.*3 unusable.*annotation id 2: degenerate bbox"):
        CocoDetection(image_dir, ann_file, strict=True)


def test_unusable_polygon_is_skipped_only_when_masks_are_wanted(make_coco, box_ann):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], [box_ann(1, 1, [2, 2, 10, 10], segmentation=[[1, 2]])])
    assert CocoDetection(image_dir, ann_file)[0][1]["boxes"].shape == (1, 4)
    with pytest.raises(DataError, match="annotation id 1: a polygon with fewer than 3 points"):
        CocoDetection(image_dir, ann_file, with_masks=True, strict=True)


def test_malformed_json_names_the_file_and_position(make_coco):
    image_dir, ann_file = make_coco([], [], raw='{"images": [{"id": 1,}')
    with pytest.raises(DataError, match=r"instances\.json.*not valid JSON.*line 1, column"):
        CocoDetection(image_dir, ann_file)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json.*does not exist.*vertebra data shapes"):
        CocoDetection(tmp_path, tmp_path / "nope.json")


def test_annotation_pointing_at_missing_image(make_coco, box_ann):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], [box_ann(17, 99, [1, 1, 5, 5])])
    with pytest.raises(DataError, match=r"instances\.json.*annotation id 17 points at image id 99"):
        CocoDetection(image_dir, ann_file)


def test_annotation_with_unknown_category(make_coco, box_ann):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], [box_ann(3, 1, [1, 1, 5, 5], category_id=4)])
    with pytest.raises(DataError, match=r"annotation id 3 has category_id 4.*ids \[1\]"):
        CocoDetection(image_dir, ann_file)


def test_missing_image_file(make_coco):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32), (2, "gone.jpg", 32, 32)], [])
    (image_dir / "gone.jpg").unlink()
    with pytest.raises(DataError, match=r"image id 2 .*instances\.json.*'gone\.jpg'.*missing"):
        CocoDetection(image_dir, ann_file)


@pytest.mark.parametrize("file_name", ["../outside.jpg", "sub/../../outside.jpg", "/tmp/outside.jpg"])
def test_a_file_name_outside_the_image_folder_is_refused(make_coco, file_name):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], [])
    (image_dir.parent / "outside.jpg").write_bytes((image_dir / "a.jpg").read_bytes())  # it exists
    record = json.loads(ann_file.read_text())
    record["images"][0]["file_name"] = file_name
    ann_file.write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"image id 1 .*outside the image folder.*relative"):
        CocoDetection(image_dir, ann_file)


def test_undecodable_image_names_file_and_record(make_coco):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32), (2, "b.jpg", 32, 32)], [])
    (image_dir / "b.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    ds = CocoDetection(image_dir, ann_file)
    ds[0]
    with pytest.raises(DataError, match=r"b\.jpg.*image id 2.*cannot be decoded"):
        ds[1]


def test_image_size_must_match_its_record(make_coco):
    image_dir, ann_file = make_coco([(1, "a.jpg", 32, 32)], [])
    raw = json.loads(ann_file.read_text())
    raw["images"][0]["width"] = 50
    ann_file.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"a\.jpg.*is 32x32 but image id 1.*says 50x32"):
        CocoDetection(image_dir, ann_file)[0]


def test_empty_split(make_coco):
    image_dir, ann_file = make_coco([], [])
    with pytest.raises(DataError, match=r"instances\.json.*split is empty"):
        CocoDetection(image_dir, ann_file)


@pytest.mark.parametrize("raw, message", [
    ("[]", "top level must be a JSON object"),
    ('{"images": [], "annotations": []}', "missing or invalid 'images'|'categories'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 3}], "categories": [{"id": 1, "name": "x"}]}',
     r"images\[0\] \(id 1\) needs 'height'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 3, "height": 3}, '
     '{"id": 1, "file_name": "b.jpg", "width": 3, "height": 3}], "categories": [{"id": 1, "name": "x"}]}',
     "duplicate id 1 in 'images'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 3, "height": 3}], "categories": [{"id": 1, "name": "x"}],'
     ' "annotations": [{"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 2]}]}', r"annotation id 4 has bbox \[1, 2\]"),
])
def test_structurally_broken_files(make_coco, raw, message):
    image_dir, ann_file = make_coco([], [], raw=raw)
    with pytest.raises(DataError, match=message):
        CocoDetection(image_dir, ann_file)
