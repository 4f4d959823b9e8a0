"""Finding and decoding the images to predict: any file Pillow reads, in the orientation people see.

Decoding follows the training readers (``vertebra.data``'s ``decode_rgb``) so a model sees at
inference what it saw in training: alpha is dropped (Pillow's ``convert("RGB")``), palette and
greyscale images become RGB, and 16-bit greyscale keeps its high byte instead of saturating at 255
(``convert`` clips ``I;16`` values, which turns a 16-bit PNG nearly white).  One difference is on
purpose: the EXIF orientation is applied.  Training must not (COCO boxes are in the stored pixel
frame), but a photo to predict is meant the way a viewer shows it, and results are reported in that
frame.

A file that cannot be decoded is an :class:`ImageFailure` (its name and why), never an exception
that would end a run over a folder: the caller counts and reports them and predicts the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..data._cocofile import rgb_array
from ..errors import DataError

__all__ = ["ImageFailure", "ImageSource", "find_images", "load_image"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ImageSource:
    """One image to predict: where it is and the name results report it under (unique in a run)."""

    path: Path
    name: str


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be decoded: its name and the reason."""

    name: str
    reason: str


def _extensions() -> frozenset[str]:
    Image.init()    # registers every plugin, so registered_extensions() is complete
    return frozenset(Image.registered_extensions())


def find_images(inputs: PathLike | Iterable[PathLike]) -> list[ImageSource]:
    """The image files of ``inputs`` (files and folders), each once, in a stable order.

    A folder contributes every file below it whose extension Pillow knows (other files, such as a
    README, are not images and are skipped); a file named explicitly is always taken, so a damaged or
    misnamed one is reported rather than silently ignored.  Names are paths relative to the folder
    given (or the file's own name); when inputs would share a name, relative to their common folder.
    A path that does not exist is a :class:`DataError`: it is a typo, not a bad image.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise DataError("no images given: pass image files or folders")
    known, found, seen = _extensions(), [], set()
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in known)
            pairs = [(p, p.relative_to(path).as_posix()) for p in files]
        elif path.is_file():
            pairs = [(path, path.name)]
        else:
            raise DataError(f"image path {str(path)!r} does not exist; pass image files or folders")
        for file, name in pairs:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append((file, name))
    if len({name for _, name in found}) < len(found):
        root = Path(os.path.commonpath([str(file.resolve().parent) for file, _ in found]))
        found = [(file, file.resolve().relative_to(root).as_posix()) for file, _ in found]
    return [ImageSource(file, name) for file, name in found]


def load_image(source: PathLike | Image.Image) -> Tensor:
    """A file (or an open Pillow image) as a uint8 RGB tensor (3, H, W), EXIF orientation applied.

    Raises :class:`DataError` naming the file when it cannot be decoded.
    """
    if isinstance(source, Image.Image):
        return _tensor(ImageOps.exif_transpose(source))
    path = Path(source)
    try:
        with Image.open(path) as handle:
            handle.load()     # forces the full decode: a truncated file fails here, not later
            return _tensor(ImageOps.exif_transpose(handle))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # UnidentifiedImageError is an OSError; a damaged chunk can surface as SyntaxError
        raise DataError(f"image file {str(path)!r} cannot be decoded: "
                        f"{str(error).strip() or type(error).__name__}") from error


def _tensor(image: Image.Image) -> Tensor:
    array = np.array(rgb_array(image), dtype=np.uint8, copy=True)   # writable: torch shares its memory
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
