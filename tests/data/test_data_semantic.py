"""Semantic masks from COCO files (torchvision-reference rules) and from image/mask folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from vertebra.data import (COCO_VOC_CATEGORY_IDS, CocoDetection, CocoSemantic, MaskFolderSegmentation,
                           segmentation_transforms)
from vertebra.errors import ConfigError, DataError, UnknownNameError


def test_semantic_mask_is_the_union_of_labelled_instance_masks(shapes):
    semantic = CocoSemantic(shapes.train_images, shapes.train_annotations)
    instances = CocoDetection(shapes.train_images, shapes.train_annotations, with_masks=True)
    assert semantic.num_classes == 4 and semantic.classes == instances.classes
    for index in range(len(semantic)):
        image, mask = semantic[index]
        _, target = instances[index]
        assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == image.shape[-2:]
        expected = (target["masks"].long() * target["labels"][:, None, None]).sum(0)  # shapes never overlap
        assert torch.equal(mask.as_subclass(torch.Tensor), expected)


def test_category_subset_in_the_given_order(shapes):
    ds = CocoSemantic(shapes.train_images, shapes.train_annotations, categories=["triangle", 1])
    assert ds.category_ids == (3, 1) and ds.classes == ("__background__", "triangle", "circle")
    full = CocoSemantic(shapes.train_images, shapes.train_annotations)
    for index in range(len(ds)):
        got, ref = ds[index][1], full[index][1]
        assert torch.equal(got == 1, ref == 3) and torch.equal(got == 2, ref == 1)
        assert torch.equal(got == 0, (ref == 0) | (ref == 2))  # squares became background


def test_overlapping_instances_are_ignored(make_coco, box_ann):
    image_dir, ann_file = make_coco([(1, "a.jpg", 20, 20)],
                                    [box_ann(1, 1, [0, 0, 10, 10], category_id=1),
                                     box_ann(2, 1, [5, 5, 10, 10], category_id=2)],
                                    categories=((1, "a"), (2, "b")))
    mask = CocoSemantic(image_dir, ann_file)[0][1]
    assert (mask[0:5, 0:5] == 1).all() and (mask[10:15, 10:15] == 2).all()
    assert (mask[5:10, 5:10] == 255).all() and (mask[16:, :] == 0).all()


def test_bad_category_selection(shapes):
    with pytest.raises(UnknownNameError, match="'triangel'.*did you mean triangle"):
        CocoSemantic(shapes.train_images, shapes.train_annotations, categories=["triangel"])
    with pytest.raises(UnknownNameError, match="category id .* '9'"):
        CocoSemantic(shapes.train_images, shapes.train_annotations, categories=[9])
    with pytest.raises(ConfigError, match=r"more than once"):
        CocoSemantic(shapes.train_images, shapes.train_annotations, categories=["circle", 1])
    with pytest.raises(ConfigError, match="non-empty list"):
        CocoSemantic(shapes.train_images, shapes.train_annotations, categories=[])


def test_voc_category_ids_are_the_twenty_voc_classes():
    assert len(COCO_VOC_CATEGORY_IDS) == len(set(COCO_VOC_CATEGORY_IDS)) == 20
    assert COCO_VOC_CATEGORY_IDS[14] == 1  # person
    assert COCO_VOC_CATEGORY_IDS[0] == 5  # aeroplane


def test_batches_with_the_default_collate(shapes):
    ds = CocoSemantic(shapes.train_images, shapes.train_annotations, segmentation_transforms(True, size=32))
    images, masks = next(iter(DataLoader(ds, batch_size=2)))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (2, 32, 32) and masks.dtype == torch.int64


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for name, value in (("a", 1), ("b", 2)):
        Image.fromarray(np.full((12, 16, 3), 40 * value, np.uint8)).save(images / f"{name}.jpg")
        label = np.zeros((12, 16), np.uint8)
        label[2:6, 3:9] = value
        label[0, 0] = 255
        mask = Image.fromarray(label, mode="L").convert("P")  # palette PNG, as VOC ships them
        mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255] * (253 * 3))
        mask.save(masks / f"{name}.png")
    return images, masks


def test_mask_folder_reads_palette_indices(folders):
    ds = MaskFolderSegmentation(*folders, num_classes=3)
    assert len(ds) == 2
    image, mask = ds[1]
    assert image.shape == (3, 12, 16) and mask.dtype == torch.int64
    assert mask[3, 4] == 2 and mask[0, 0] == 255 and mask[10, 10] == 0


def test_mask_folder_class_names_set_num_classes(folders):
    ds = MaskFolderSegmentation(*folders, classes=["background", "red"])
    assert ds.classes == ("background", "red") and ds.num_classes == 2
    with pytest.raises(DataError, match="outside 0..1"):
        ds[1]
    with pytest.raises(ConfigError, match="num_classes=3 but 2 class names"):
        MaskFolderSegmentation(*folders, classes=["background", "red"], num_classes=3)


def test_mask_folder_errors(folders):
    images, masks = folders
    with pytest.raises(DataError, match="outside 0..1"):
        MaskFolderSegmentation(images, masks, num_classes=2)[1]
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(masks / "a.png")
    with pytest.raises(DataError, match=r"a\.png.*mode RGB.*single-channel"):
        MaskFolderSegmentation(images, masks)[0]
    Image.fromarray(np.zeros((10, 16), np.uint8)).save(masks / "a.png")
    with pytest.raises(DataError, match=r"a\.png.*is 16x10 but its image is 16x12"):
        MaskFolderSegmentation(images, masks)[0]
    (masks / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"a\.png.*cannot be decoded"):
        MaskFolderSegmentation(images, masks)[0]
    (masks / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.jpg.*has no mask.*b\.png"):
        MaskFolderSegmentation(images, masks)
    (masks.parent / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        MaskFolderSegmentation(masks.parent / "empty", masks)
    with pytest.raises(DataError, match="does not exist"):
        MaskFolderSegmentation(images, masks.parent / "nope")
