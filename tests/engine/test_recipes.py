"""Augmentation recipes (issue 16, item 4): each ``data.augment`` option changes what the training
loader yields (the transform, never a timing), read from a config like a run reads it."""

from __future__ import annotations

import pytest
import torch

from vertebra.data import generate_shapes
from vertebra.engine import parse_config
from vertebra.engine.tasks import task_spec
from vertebra.errors import ConfigError

from engine_helpers import write_image_folder

HEADS = {"classification": "classifier", "detection": "fasterrcnn_fpn", "semantic": "lraspp"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    write_image_folder(root, classes=2)
    generate_shapes(root / "shapes", num_train=2, num_val=1, image_size=48, seed=0)
    return root


def sample(folders, task, augment, size, index=0, seed=0):
    data = ({"format": "image_folder", "root": str(folders), "train_images": "train", "val_images": "val"}
            if task == "classification" else {"format": "shapes", "root": str(folders / "shapes"), "num_train": 2,
                                               "num_val": 1, "image_size": 48})
    config = parse_config({"task": task, "model": {"head": HEADS[task]}, "data": {**data, "size": size,
                                                                                  "augment": augment}})
    bundle = task_spec(task).build_data(config.data, folders)
    torch.manual_seed(seed)
    return bundle, bundle.train[index]


def differs(a, b):
    if isinstance(a, torch.Tensor):
        return a.shape != b.shape or not torch.equal(a, b)
    if isinstance(a, dict):
        return any(differs(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return any(differs(x, y) for x, y in zip(a, b))
    return a != b


@pytest.mark.parametrize("task, option, size", [
    ("classification", {"auto_augment": "autoaugment"}, 32), ("classification", {"auto_augment": "randaugment"}, 32),
    ("classification", {"auto_augment": "trivialaugment"}, 32), ("classification", {"auto_augment": "augmix"}, 32),
    ("classification", {"random_erasing": 1.0}, 32), ("classification", {"hflip": 1.0}, 32),
    ("detection", {"scale_jitter": [0.5, 0.5]}, 32), ("detection", {"hflip": 1.0}, None),
    ("semantic", {"scale_range": [0.1, 0.1]}, 32), ("semantic", {"hflip": 1.0}, 32),
])
def test_each_option_changes_what_the_loader_yields(folders, task, option, size):
    base = {"hflip": 0.0}                         # no flip unless the option asks, so the rest is comparable
    pairs = [(sample(folders, task, base, size, seed=seed)[1], sample(folders, task, {**base, **option}, size,
                                                                       seed=seed)[1]) for seed in range(3)]
    assert any(differs(plain, augmented) for plain, augmented in pairs)   # a policy may draw a no-op once
    plain, augmented = pairs[0]
    if "scale_jitter" in option:                  # 48 px -> shorter side 0.5 x 32 = 16
        assert augmented[0].shape[-2:] == (16, 16) and plain[0].shape[-2:] == (32, 32)


@pytest.mark.parametrize("option", [{"iou_crop": True}, {"zoom_out": True}])
def test_iou_crop_and_zoom_out_change_some_samples_and_keep_boxes_valid(folders, option):
    changed = 0
    for seed in range(6):                         # both are random: no-op for some draws by design
        _, plain = sample(folders, "detection", {"hflip": 0.0}, None, seed=seed)
        _, augmented = sample(folders, "detection", {"hflip": 0.0, **option}, None, seed=seed)
        changed += differs(plain[0], augmented[0])
        boxes = augmented[1]["boxes"]
        assert len(boxes) == len(augmented[1]["labels"]) and bool((boxes[:, 2:] > boxes[:, :2]).all())
    assert changed > 0


def test_mixup_cutmix_and_label_smoothing_change_the_training_step(folders):
    bundle, _ = sample(folders, "classification", {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
                       32)
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    torch.manual_seed(0)
    mixed, soft = bundle.extra["mix"](images, labels)
    assert soft.shape == (4, 2) and torch.allclose(soft.sum(1), torch.ones(4)) and not torch.equal(mixed, images)
    task = task_spec("classification").make(bundle, torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2))
    torch.manual_seed(0)
    recipe_loss = task.loss(model, (images, labels))[0]
    bundle.extra.update(mix=None, label_smoothing=0.0)
    plain_loss = task.loss(model, (images, labels))[0]
    assert not torch.isclose(recipe_loss, plain_loss)


def test_recipe_keys_are_checked_against_the_task_and_their_ranges():
    with pytest.raises(ConfigError, match="data.augment.iou_crop: applies to task detection / instance"):
        parse_config({"task": "semantic", "model": {"head": "lraspp"}, "data": {"augment": {"iou_crop": True}}})
    with pytest.raises(ConfigError, match="data.augment.auto_augment: must be one of 'none', 'autoaugment'"):
        parse_config({"task": "classification", "model": {"head": "classifier"},
                      "data": {"augment": {"auto_augment": "rand"}}})
    for key, value, words in (("scale_jitter", [2.0, 1.0], "0 < low <= high"), ("mixup_alpha", -1, ">= 0"),
                              ("label_smoothing", 1.0, "[0, 1)"), ("scale_range", [0.5, 1.5], "<= 1"),
                              ("random_erasing", float("nan"), "probability")):
        with pytest.raises(ConfigError, match=rf"data.augment.{key}: .*{words}".replace("[", r"\[").replace(")", r"\)")):
            parse_config({"task": "classification", "model": {"head": "classifier"}, "data": {"augment": {key: value}}})
