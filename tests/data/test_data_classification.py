"""ImageFolderClassification: torchvision's ImageFolder layout with tv_tensors and DataError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vertebra.data import ImageFolderClassification, classification_transforms
from vertebra.errors import DataError


@pytest.fixture
def tree(tmp_path):
    for name, count in (("dog", 2), ("cat", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((20, 30, 3), 100 + i, np.uint8)).save(tmp_path / name / f"{i}.png")
    return tmp_path


def test_labels_follow_sorted_class_names(tree):
    ds = ImageFolderClassification(tree, classification_transforms(False, size=16))
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 3
    assert [label for _, label in ds.samples] == [0, 1, 1]
    image, label = ds[2]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1


def test_raw_samples_are_uint8_images(tree):
    image, label = ImageFolderClassification(tree)[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 30) and label == 0


def test_errors(tree, tmp_path_factory):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderClassification(tree / "missing")
    with pytest.raises(DataError, match="class folder|Found no valid file"):
        ImageFolderClassification(tmp_path_factory.mktemp("empty"))
    (tree / "cat" / "0.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"0\.png.*class 'cat'.*cannot be decoded"):
        ImageFolderClassification(tree)[0]
