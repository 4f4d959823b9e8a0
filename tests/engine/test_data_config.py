"""The data section (issue 16, item 3): data.val_split holds out the same images every time, train and
val must agree on their categories, mask folders take their class names from data.classes, and the
shipped example configs read the layouts they describe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vertebra.data import Split, generate_shapes, split_indices
from vertebra.engine import load_train_config, parse_config, train
from vertebra.engine.tasks import task_spec
from vertebra.errors import ConfigError, DataError

from engine_helpers import tiny, write_image_folder

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def read(config: dict, out: Path):
    parsed = parse_config(config)
    return task_spec(parsed.task).build_data(parsed.data, out)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_train=6, num_val=2, image_size=32, seed=0)
    return root


def coco(root, **data):
    return {"format": "coco", "root": str(root), "train_images": "train",
            "train_annotations": "annotations/instances_train.json", "size": None, **data}


def test_split_indices_are_deterministic_disjoint_and_complete():
    train, val = split_indices(10, 0.3)
    assert (train, val) == split_indices(10, 0.3) and len(val) == 3
    assert sorted(train + val) == list(range(10)) and not set(train) & set(val)
    assert split_indices(10, 0.01)[1] and len(split_indices(10, 0.01)[1]) == 1       # at least one held out
    with pytest.raises(DataError, match="leaves nothing to train on"):
        split_indices(1, 0.5)
    view = Split(["a", "b", "c"], [2, 0])
    assert [view[0], view[1]] == ["c", "a"] and len(view) == 2


def test_val_split_holds_out_the_same_coco_images_and_scores_only_them(shapes, tmp_path):
    config = {"task": "detection", "model": {"head": "fasterrcnn_fpn"}, "data": coco(shapes, val_split=0.5)}
    first, second = read(config, tmp_path), read(config, tmp_path)
    assert first.val.indices == second.val.indices and len(first.val) == 3 and len(first.train) == 3
    assert not set(first.train.indices) & set(first.val.indices)
    held = {first.val.ids[i] for i in first.val.indices}
    assert set(first.coco_gt.getImgIds()) == held                  # COCOeval scores the held-out images only
    assert first.val[0][1]["image_id"] in held and first.class_names[1:] == ["circle", "square", "triangle"]
    run = train(tiny("detection", data=coco(shapes, val_split=0.5), max_steps_per_epoch=1), out_dir=tmp_path / "run",
                progress=False)
    assert 0.0 <= run.metrics["AP"] <= 1.0                         # evaluated against the held-out subset


def test_val_split_for_image_folders_and_its_conflicts(tmp_path):
    write_image_folder(tmp_path, classes=2)
    data = {"format": "image_folder", "root": str(tmp_path), "train_images": "train", "size": 32}
    bundle = read({"task": "classification", "model": {"head": "classifier"}, "data": {**data, "val_split": 0.25}},
                  tmp_path)
    assert len(bundle.val) == 2 and len(bundle.train) == 6 and bundle.class_names == ["green", "red"]
    with pytest.raises(ConfigError, match="data.val_split: .*data.val_images name a validation set too"):
        read({"task": "classification", "model": {"head": "classifier"},
              "data": {**data, "val_split": 0.25, "val_images": "val"}}, tmp_path)
    with pytest.raises(ConfigError, match="or data.val_split instead of data.val_images"):
        read({"task": "classification", "model": {"head": "classifier"}, "data": data}, tmp_path)
    with pytest.raises(ConfigError, match="own validation split"):
        read({"task": "semantic", "model": {"head": "lraspp"}, "data": {"format": "shapes", "val_split": 0.2}},
             tmp_path)


def test_train_and_val_must_agree_on_their_categories(shapes, tmp_path):
    val = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    val["categories"][0]["name"] = "ellipse"
    (tmp_path / "instances_val.json").write_text(json.dumps(val))
    data = coco(shapes, val_images="val", val_annotations=str(tmp_path / "instances_val.json"))
    for task, head in (("detection", "fasterrcnn_fpn"), ("semantic", "lraspp")):
        with pytest.raises(DataError, match=r"disagree on their categories .*'circle'.*'ellipse'"):
            read({"task": task, "model": {"head": head}, "data": data}, tmp_path)


def test_mask_folders_take_their_class_names_from_the_config(tmp_path):
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (tmp_path / split / folder).mkdir(parents=True)
        for name in ("a", "b"):
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / split / "images" / f"{name}.png")
            Image.fromarray(np.full((16, 16), 2, np.uint8)).save(tmp_path / split / "masks" / f"{name}.png")
    config = load_train_config(CONFIGS / "mask_folder_segmentation.yaml", [f"data.root={tmp_path}", "data.size=16"])
    bundle = task_spec(config.task).build_data(config.data, tmp_path)
    assert bundle.num_classes == 3 and bundle.class_names == ["background", "road", "car"]
    assert int(bundle.train[0][1].max()) == 2
    with pytest.raises(ConfigError, match="data.classes: .*the names of the mask values"):
        task_spec("semantic").build_data(parse_config({"model": {"head": "lraspp"}, "data": {
            **{k: getattr(config.data, k) for k in ("format", "root", "train_images", "train_annotations",
                                                    "val_images", "val_annotations")}}}).data, tmp_path)
    with pytest.raises(ConfigError, match="data.classes: names the mask values of format 'mask_folder'"):
        parse_config({"model": {"head": "lraspp"}, "data": {"format": "coco", "classes": ["a", "b"]}})


@pytest.mark.parametrize("name", ["coco_detection.yaml", "coco_instance.yaml"])
def test_the_coco_example_configs_read_a_coco_layout(name, shapes, tmp_path):
    config = load_train_config(CONFIGS / name, [f"data.root={shapes}"])
    bundle = task_spec(config.task).build_data(config.data, tmp_path)
    assert len(bundle.train) == 6 and len(bundle.val) == 2 and bundle.num_classes == 4
