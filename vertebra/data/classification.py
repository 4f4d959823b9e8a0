"""Classification from an ImageFolder tree (``root/<class>/<image>``), with vertebra's errors.

A thin wrapper over ``torchvision.datasets.ImageFolder`` that decodes with ``torchvision.io`` into
``tv_tensors.Image`` (so :func:`vertebra.data.classification_transforms` applies directly) and turns
an empty or missing tree or an undecodable file into a :class:`~vertebra.errors.DataError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from ..errors import DataError
from ._cocofile import PathLike, decode_rgb

__all__ = ["ImageFolderClassification"]


class ImageFolderClassification(Dataset):
    """``(image, label)`` samples from ``root/<class name>/*.jpg``; labels follow sorted class names.

    Attributes: ``classes`` (names by label), ``class_to_idx``, ``num_classes``, ``samples``
    (``(path, label)`` pairs).

    Raises:
        DataError: ``root`` missing, no class folders or no images in them, or (at sample time)
            a file that cannot be decoded.
    """

    def __init__(self, root: PathLike, transforms: Callable[..., Any] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"classification folder {str(self.root)!r} does not exist; expected "
                            f"root/<class name>/<image files>")
        try:
            folder = ImageFolder(str(self.root), loader=_path_only)
        except FileNotFoundError as error:  # no class folders, or class folders without images
            raise DataError(f"classification folder {str(self.root)!r}: {error}; expected "
                            f"root/<class name>/<image files>") from error
        self.classes: list[str] = folder.classes
        self.class_to_idx: dict[str, int] = folder.class_to_idx
        self.samples: list[tuple[str, int]] = folder.samples
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = decode_rgb(Path(path), f"class {self.classes[label]!r} of {str(self.root)!r}")
        if self.transforms is not None:
            image = self.transforms(image)
        return image, label


def _path_only(path: str) -> str:  # ImageFolder wants a loader; we decode ourselves
    return path
