"""The built-in shapes generator writes a real, deterministic COCO data set whose annotations
match the pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter
from pycocotools.coco import COCO

from vertebra.data import SHAPE_CATEGORIES, generate_shapes
from vertebra.errors import ConfigError

# pycocotools 2.0.x's annToMask warns under numpy 2 on every call (harmless; see vertebra.data._cocofile)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load(path):
    return json.loads(path.read_text())


def test_writes_coco_layout_and_records(shapes):
    for image_dir, ann_file, count in ((shapes.train_images, shapes.train_annotations, 8),
                                       (shapes.val_images, shapes.val_annotations, 4)):
        data = _load(ann_file)
        assert [c["name"] for c in data["categories"]] == list(SHAPE_CATEGORIES)
        assert len(data["images"]) == count
        assert len({img["id"] for img in data["images"]}) == count
        for img in data["images"]:
            with Image.open(image_dir / img["file_name"]) as im:
                assert im.format == "JPEG" and im.size == (img["width"], img["height"]) == (64, 64)
        assert data["annotations"], "every image has at least one shape"
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
            polygon = ann["segmentation"][0]
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            xs, ys = polygon[0::2], polygon[1::2]
            assert (min(xs), min(ys)) == pytest.approx((x, y), abs=0.011)
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
        coco = COCO(str(ann_file))  # pycocotools itself accepts it
        assert sorted(coco.getCatIds()) == [1, 2, 3]


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = generate_shapes(tmp_path / "a", num_train=3, num_val=2, image_size=48, seed=11)
    b = generate_shapes(tmp_path / "b", num_train=3, num_val=2, image_size=48, seed=11)
    c = generate_shapes(tmp_path / "c", num_train=3, num_val=2, image_size=48, seed=12)
    assert a.train_annotations.read_bytes() == b.train_annotations.read_bytes()
    assert a.val_annotations.read_bytes() == b.val_annotations.read_bytes()
    assert (a.train_images / "000002.jpg").read_bytes() == (b.train_images / "000002.jpg").read_bytes()
    assert a.train_annotations.read_bytes() != c.train_annotations.read_bytes()
    # train and val are different images, not copies
    assert (a.train_images / "000001.jpg").read_bytes() != (a.val_images / "000001.jpg").read_bytes()


def test_image_k_does_not_depend_on_split_size(tmp_path):
    small = generate_shapes(tmp_path / "s", num_train=2, num_val=1, image_size=48, seed=5)
    large = generate_shapes(tmp_path / "l", num_train=5, num_val=1, image_size=48, seed=5)
    small_anns = _load(small.train_annotations)["annotations"]
    large_anns = [a for a in _load(large.train_annotations)["annotations"] if a["image_id"] <= 2]
    assert small_anns == large_anns


def test_annotations_cover_the_drawn_shapes(shapes):
    """Shapes are saturated, backgrounds muted: saturation inside the masks is high, outside low.
    A shifted or wrong polygon would mix the two."""
    coco = COCO(str(shapes.train_annotations))
    for image_id, record in coco.imgs.items():
        with Image.open(shapes.train_images / record["file_name"]) as im:
            saturation = np.asarray(im.convert("HSV"))[..., 1] / 255.0
        union = np.zeros(saturation.shape, bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            mask = coco.annToMask(ann).astype(bool)
            union |= mask
            assert saturation[mask].mean() > 0.5, (image_id, ann["id"])
        # stay 2 px away from the shapes' edges, where JPEG blurs the two together
        edge_free = ~np.asarray(Image.fromarray(union.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))).astype(bool)
        assert saturation[edge_free].mean() < 0.4, image_id


@pytest.mark.parametrize("kwargs", [{"num_train": 0}, {"num_val": -1}, {"image_size": 16},
                                    {"seed": -1}, {"seed": 1.5}, {"num_train": True}])
def test_bad_arguments_are_config_errors(tmp_path, kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        generate_shapes(tmp_path, **kwargs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(32, 160))
def test_any_seed_and_size_gives_valid_disjoint_instances(tmp_path, seed, size):
    paths = generate_shapes(tmp_path / f"{seed}_{size}", num_train=2, num_val=1, image_size=size, seed=seed)
    coco = COCO(str(paths.train_annotations))
    assert len(coco.imgs) == 2
    for image_id in coco.imgs:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(anns) <= 4
        masks = np.stack([coco.annToMask(a) for a in anns])
        assert masks.sum(0).max() == 1  # instances never overlap, so every polygon is fully visible
        for ann, mask in zip(anns, masks):
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
            assert mask.sum() == ann["area"] > 0
