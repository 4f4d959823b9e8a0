"""Every annotation record is checked against its image when the file is loaded: a hostile or
malformed record is a DataError naming the file, the annotation and what to fix — never a crash
mid-epoch, never gigabytes of memory.

Polygons and RLEs that could make pycocotools allocate in proportion to their values are only
ever loaded through ``run_limited`` (a subprocess under an address-space limit).
"""

from __future__ import annotations

import json

import pytest

from vertebra.data import CocoDetection, CocoSemantic
from vertebra.errors import DataError


def _write(tmp_path, name, annotations, width=32, height=32):
    path = tmp_path / name
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}],
        "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return path


def _polygon_ann(polygon, ann_id=7):
    return {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16.0,
            "iscrowd": 0, "segmentation": [polygon]}


# -- finding 1: one polygon must not be able to exhaust the host's memory ------------------------

HOSTILE_POLYGONS = {
    "far_1e7": [1, 1, 5, 1e7, -1e7, 1],         # 1.2 GB in pycocotools' rasteriser
    "far_1e8": [1, 1, 5, 1e8, -1e8, 1],         # std::bad_alloc / SIGSEGV
    "far_1e30": [1, 1, 5, 1e30, -1e30, 1],      # grew to 23 GB: a machine-wide OOM kill
    "infinite": [1, 1, 5, float("inf"), 9, 1],
    "nan": [1, 1, float("nan"), 5, 9, 1],
    "huge_int": [1, 1, 5, 10**400, 9, 1],
    "zigzag": [v for _ in range(200_000) for v in (0, 0, 32, 32)],  # in bounds, 6.4M px of outline
}


def test_hostile_polygons_are_refused_before_rasterising(make_coco, run_limited, tmp_path):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    files = [_write(tmp_path, f"{name}.json", [_polygon_ann(p)]) for name, p in HOSTILE_POLYGONS.items()]
    results = dict(zip(HOSTILE_POLYGONS, run_limited(image_dir, files)))
    for name, line in results.items():
        assert line.startswith("DataError: "), (name, line)
        assert f"{name}.json" in line and "annotation id 7" in line and "32x32" in line, (name, line)
    assert "outside the image" in results["far_1e7"] and "not a finite pixel coordinate" in results["nan"]
    assert "outline" in results["zigzag"]


def test_polygon_just_past_the_border_is_accepted_and_rasterised_as_before(make_coco, run_limited, tmp_path):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    border = _write(tmp_path, "border.json", [_polygon_ann([-0.5, -0.5, 32.6, 0, 32.6, 33.0, 0, 32.5])])
    assert run_limited(image_dir, [border]) == ["ok"]
    mask = CocoDetection(image_dir, border, with_masks=True)[0][1]["masks"][0]
    assert mask.shape == (32, 32) and int(mask.sum()) == 32 * 32


def test_coordinates_are_checked_against_each_image_size(make_coco, tmp_path):
    image_dir, _ = make_coco([(1, "a.jpg", 64, 16)], [])
    wide = _write(tmp_path, "wide.json", [_polygon_ann([1, 1, 60, 1, 60, 15])], width=64, height=16)
    CocoDetection(image_dir, wide, with_masks=True)[0]  # x up to 60 < 64, y up to 15 < 16
    tall = _write(tmp_path, "tall.json", [_polygon_ann([1, 1, 10, 1, 10, 40])], width=64, height=16)
    with pytest.raises(DataError, match=r"tall\.json.*annotation id 7.*64x16.*y = 40, outside the image"):
        CocoSemantic(image_dir, tall)


@pytest.mark.parametrize("polygon, problem", [
    ([1, 1, "5", 1, 5, 5], r"coordinate '5' is not a number"),
    ([1, 1, None, 1, 5, 5], r"coordinate None is not a number"),
    ([1, 1, True, 1, 5, 5], r"coordinate True is not a number"),
    ([1, 1, [5], 1, 5, 5], r"coordinate \[5\] is not a number"),
    ({"x": 1}, r"polygon 0 must be a list of numbers"),
])
def test_non_numeric_polygon_coordinates_are_refused_at_load(make_coco, tmp_path, polygon, problem):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    ann = _polygon_ann(polygon)
    with pytest.raises(DataError, match=rf"bad\.json.*annotation id 7.*{problem}"):
        CocoDetection(image_dir, _write(tmp_path, "bad.json", [ann]))  # even without masks
