"""A validation set carved from the training set (``data.val_split``), the same one every time.

A data set without a validation split still needs one to pick ``best.pth`` and report a metric.
:func:`split_indices` holds out a fraction of the samples by a permutation of a fixed seed, so the
split depends only on the number of samples and the fraction: every run, rank, resume and
``vertebra eval`` of the config sees the same validation images, and none of them is trained on.
:class:`Split` is the view of a data set restricted to some indices; it answers the data set's other
attributes (class names, category ids) so the rest of the engine does not know it is there.
:func:`coco_subset` restricts a COCO ground truth to the held-out images, which is what COCOeval
must score against (images without predictions would count as misses).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = ["SPLIT_SEED", "split_indices", "Split", "coco_subset"]

#: The permutation's seed: a constant, so the split is a function of (count, fraction) alone.
SPLIT_SEED = 0


def split_indices(count: int, fraction: float, what: str = "samples") -> tuple[list[int], list[int]]:
    """``(train, val)`` index lists (each sorted): ``round(count * fraction)`` (at least 1) held out."""
    held = max(1, round(count * fraction))
    if held >= count:
        raise DataError(f"val_split={fraction} of {count} {what} leaves nothing to train on; lower data.val_split "
                        f"or give a validation set (data.val_images)")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    return sorted(order[held:]), sorted(order[:held])


class Split(Dataset):
    """``dataset`` seen through ``indices``: ``Split(d, [3, 5])[1] is d[5]``; other attributes are ``d``'s."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    def __getattr__(self, name: str) -> Any:
        dataset = self.__dict__.get("dataset")         # absent while unpickling in a worker process
        if dataset is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(dataset, name)

    def __repr__(self) -> str:
        return f"Split({len(self.indices)} of {self.dataset!r})"


def coco_subset(coco: Any, image_ids: Sequence[int]) -> Any:
    """A new pycocotools ``COCO`` holding only ``image_ids`` and their annotations (categories kept)."""
    from pycocotools.coco import COCO

    keep = set(image_ids)
    dataset = coco.dataset
    subset = COCO()
    subset.dataset = {**dataset, "images": [image for image in dataset["images"] if image["id"] in keep],
                      "annotations": [ann for ann in dataset.get("annotations", []) if ann["image_id"] in keep]}
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints "creating index..."
        subset.createIndex()
    return subset
