"""Every annotation record is checked against its image when the file is loaded: a hostile or
malformed record is a DataError naming the file, the annotation and what to fix — never a crash
mid-epoch, never gigabytes of memory.

Polygons and RLEs that could make pycocotools allocate in proportion to their values are only
ever loaded through ``run_limited`` (a subprocess under an address-space limit).
"""

from __future__ import annotations

import json
import re

import numpy as np
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
    border = _write(tmp_path, "border.json", [_polygon_ann([-0.5, -0.5, 32.6, 0, 32.6, 33.0, 0, 32.5])])
    *lines, border_line = run_limited(image_dir, files + [border])
    results = dict(zip(HOSTILE_POLYGONS, lines))
    for name, line in results.items():
        assert line.startswith("DataError: "), (name, line)
        assert f"{name}.json" in line and "annotation id 7" in line and "32x32" in line, (name, line)
    assert "outside the image" in results["far_1e7"] and "not a finite pixel coordinate" in results["nan"]
    assert "outline" in results["zigzag"]
    assert border_line == "ok"  # a little past the border is what labelling tools write


def test_polygon_just_past_the_border_is_rasterised_as_before(make_coco, tmp_path):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    border = _write(tmp_path, "border.json", [_polygon_ann([-0.5, -0.5, 32.6, 0, 32.6, 33.0, 0, 32.5])])
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


# -- finding 4: RLE segmentations are checked against the image -----------------------------------

def _rle_ann(rle, ann_id=9, iscrowd=1):
    return {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 32], "area": 100.0,
            "iscrowd": iscrowd, "segmentation": rle}


def _compressed(counts, height, width):
    """pycocotools' compressed string for uncompressed ``counts`` of a ``height`` x ``width`` mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)["counts"].decode()


HOSTILE_RLES = {  # 32x32 image: the runs must add up to 1024
    "garbage": ({"counts": "!!#~~", "size": [32, 32]}, r"counts.*character '!'"),
    "truncated": ({"counts": "0P", "size": [32, 32]}, r"counts.*ends in the middle of a run"),
    "counts_type": ({"counts": 1024, "size": [32, 32]}, r"counts must be a list of run lengths or"),
    "counts_items": ({"counts": [1000, "24"], "size": [32, 32]}, r"run lengths.*'24'"),
    "negative": ({"counts": [-5, 1029], "size": [32, 32]}, r"run lengths.*-5"),
    "too_long_list": ({"counts": [0, 10**6], "size": [32, 32]}, r"add up to 1000000.*1024"),
    "too_long_string": ({"counts": _compressed([0, 10**6], 1000, 1000), "size": [32, 32]},
                        r"add up to 1000000.*1024"),
    "too_short": ({"counts": [3, 4], "size": [32, 32]}, r"add up to 7.*1024"),
    "size_other_image": ({"counts": [0, 256], "size": [16, 16]}, r"size \[16, 16\].*\[32, 32\]"),
    "size_huge": ({"counts": [0, 10**10], "size": [10**5, 10**5]}, r"size \[100000, 100000\]"),
    "size_type": ({"counts": [0, 1024], "size": "32x32"}, r"size '32x32'"),
    "size_floats": ({"counts": [0, 1024], "size": [32.0, 32.0]}, r"size \[32.0, 32.0\]"),
    "no_counts": ({"size": [32, 32]}, r"RLE needs 'counts' and 'size'"),
}


def test_hostile_rles_are_refused_before_decoding(make_coco, run_limited, tmp_path):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    files = [_write(tmp_path, f"{name}.json", [_rle_ann(rle)]) for name, (rle, _) in HOSTILE_RLES.items()]
    for (name, (_, problem)), line in zip(HOSTILE_RLES.items(), run_limited(image_dir, files)):
        assert line.startswith("DataError: "), (name, line)
        assert f"{name}.json" in line and "annotation id 9" in line and "32x32" in line, (name, line)
        assert re.search(problem, line), (name, problem, line)


def test_valid_rles_decode_to_the_mask_they_encode(make_coco, tmp_path):
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    truth = (rng.random((32, 32)) > 0.6).astype(np.uint8)
    truth[:, :3] = 1  # long runs too
    compressed = mask_utils.encode(np.asfortranarray(truth))
    runs = _runs(truth)
    assert _compressed(runs, 32, 32) == compressed["counts"].decode()
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    anns = [_rle_ann({"counts": compressed["counts"].decode(), "size": [32, 32]}, ann_id=1, iscrowd=0),
            _rle_ann({"counts": runs, "size": [32, 32]}, ann_id=2, iscrowd=0)]
    masks = CocoDetection(image_dir, _write(tmp_path, "ok.json", anns), with_masks=True)[0][1]["masks"]
    assert masks.shape == (2, 32, 32)
    for mask in masks:
        assert np.array_equal(mask.numpy(), truth)


def _runs(mask):
    """Uncompressed COCO run lengths of a mask (column-major, starting with a run of zeros)."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return ([0] + runs) if flat[0] else runs


# -- finding 4: the scalar fields COCOeval reads after the epoch ----------------------------------

@pytest.mark.parametrize("field, value, problem", [
    ("area", "16", r"area '16'.*a finite number >= 0"),
    ("area", -1.0, r"area -1\.0"),
    ("area", float("nan"), r"area nan"),
    ("area", True, r"area True"),
    ("area", [16], r"area \[16\]"),
    ("iscrowd", "0", r"iscrowd '0'; it must be 0 .* or 1"),
    ("iscrowd", 2, r"iscrowd 2"),
    ("iscrowd", 0.5, r"iscrowd 0\.5"),
    ("iscrowd", None, r"iscrowd None"),
    ("bbox", [1, 2, 10**400, 4], r"has bbox \[1, 2, 10000000.*characters\).*4 numbers"),
    ("bbox", [1, 2, True, 4], r"has bbox \[1, 2, True, 4\]"),
    ("bbox", None, r"has bbox None"),
    ("segmentation", 5, r"segmentation must be a list of polygons.*or an RLE.*got int"),
    ("segmentation", "polygon", r"segmentation must be.*got str"),
    ("segmentation", [[1, 2, 3, 4, 5, 6], "x"], r"polygon 1 must be a list of numbers"),
])
def test_malformed_fields_are_refused_at_load(make_coco, tmp_path, field, value, problem):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    ann = {**_polygon_ann([1, 1, 5, 1, 5, 5], ann_id=3), field: value}
    with pytest.raises(DataError, match=rf"bad\.json.*annotation id 3.*{problem}"):
        CocoDetection(image_dir, _write(tmp_path, "bad.json", [ann]))


def test_well_formed_fields_load_and_defaults_are_filled(make_coco, tmp_path):
    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    bare = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 5]}
    crowd = {**_polygon_ann([1, 1, 5, 1, 5, 5], ann_id=2), "iscrowd": 1, "area": 0}
    nan_box = {**bare, "id": 3, "bbox": [1, 1, float("nan"), 4], "segmentation": None}
    with pytest.warns(UserWarning, match=r"skipped 1 unusable.*annotation id 3: degenerate bbox"):
        ds = CocoDetection(image_dir, _write(tmp_path, "ok.json", [bare, crowd, nan_box]))
    assert ds.coco.anns[1]["area"] == 20.0 and ds.coco.anns[1]["iscrowd"] == 0
    assert ds[0][1]["boxes"].tolist() == [[1.0, 1.0, 5.0, 6.0]]  # the crowd one is left out, as before


# -- beyond the list: image records and the file itself -------------------------------------------

def test_image_record_larger_than_any_decodable_image_is_refused(make_coco, tmp_path):
    from PIL import Image

    image_dir, _ = make_coco([(1, "a.jpg", 32, 32)], [])
    huge = tmp_path / "huge.json"  # its masks would be 10^10 bytes each, and it can never be decoded
    huge.write_text(json.dumps({"images": [{"id": 4, "file_name": "a.jpg", "width": 10**5, "height": 10**5}],
                                "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    limit = 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match=rf"huge\.json.*image id 4.*100000x100000.*{limit}.*MAX_IMAGE_PIXELS"):
        CocoDetection(image_dir, huge)
    huge.write_text(huge.read_text().replace("100000,", "0,", 1))
    with pytest.raises(DataError, match=r"image id 4 \('a\.jpg'\) has size 0x100000; width and height must"):
        CocoDetection(image_dir, huge)


def test_outline_budget_has_a_ceiling_for_huge_images():
    from vertebra.data._records import check_annotation

    image = {"id": 1, "width": 10**6, "height": 150}  # 150 Mpx: decodable, but 100 laps = 1e8 px of outline
    zigzag = [v for _ in range(600) for v in (0, 0, 10**6 - 1, 149)]
    ann = {"id": 2, "bbox": [0, 0, 1, 1], "segmentation": [zigzag]}
    with pytest.raises(DataError, match=r"outline of \d+ px, more than .*4000000 px"):
        check_annotation(ann, image, "f.json")


def test_deeply_nested_json_is_a_data_error(make_coco):
    image_dir, ann_file = make_coco([], [], raw="[" * 100_000)
    with pytest.raises(DataError, match=r"instances\.json.*nested too deeply"):
        CocoDetection(image_dir, ann_file)
