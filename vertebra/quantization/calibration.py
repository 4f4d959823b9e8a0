"""Calibration inputs for post-training quantization: images as the model sees them at evaluation.

Int8 ranges are set by the activations of a few hundred representative inputs, so those inputs
must be preprocessed exactly as at inference -- the artifact's :class:`Preprocessing`, the same
steps ``vertebra predict`` applies (:func:`vertebra.deploy.preprocess.preprocess`).  A calibration
source is image files or folders, or a training config (YAML), whose training images are used.

The number of inputs matters more than it seems: fewer than :data:`MIN_SAMPLES` give ranges set by
a handful of pixels' extremes, and accuracy drops without any error.  So too few readable images is
a :class:`~vertebra.errors.QuantizationError` naming the unreadable files, not a quiet, worse model.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from ..deploy.images import ImageSource, find_images, load_image
from ..deploy.preprocess import preprocess
from ..errors import DataError, QuantizationError
from ..weights.artifact import Preprocessing

__all__ = ["MIN_SAMPLES", "Calibration", "calibration_inputs", "config_images"]

MIN_SAMPLES = 8
_CONFIG_SUFFIXES = (".yaml", ".yml")

PathLike = str | os.PathLike[str]


@dataclass
class Calibration:
    """Preprocessed inputs ``(1, 3, H, W)`` in file order, and the files that could not be read."""

    inputs: list[Tensor]
    names: list[str]
    unreadable: list[str] = field(default_factory=list)


def calibration_inputs(source: PathLike | Sequence[PathLike], preprocessing: Preprocessing, *,
                       samples: int) -> Calibration:
    """The first ``samples`` readable images of ``source`` (files, folders or one training config)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_SAMPLES:
        raise QuantizationError(f"calibration: samples={samples!r}; int8 ranges need at least {MIN_SAMPLES} "
                                "images (a few hundred is typical)")
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if len(paths) == 1 and Path(paths[0]).suffix.lower() in _CONFIG_SUFFIXES:
        with tempfile.TemporaryDirectory(prefix="vertebra-calibration-") as scratch:
            return _read(find_images(config_images(paths[0], Path(scratch))), preprocessing, samples,
                         where=f"the training images of {str(paths[0])!r}")
    where = ", ".join(repr(str(p)) for p in paths) or "(nothing)"
    try:
        sources = find_images(paths)
    except DataError as error:
        raise QuantizationError(f"calibration: {error}") from error
    return _read(sources, preprocessing, samples, where=where)


def config_images(config_path: PathLike, scratch: Path) -> Path:
    """The training image folder of a training config (the built-in shapes set is generated in ``scratch``)."""
    from ..engine.config import load_train_config
    from ..engine.data import prepare_shapes, train_images_folder

    config = load_train_config(config_path)
    if config.data.format == "shapes" and config.data.root is None:
        prepare_shapes(config.data, scratch)
    return train_images_folder(config.data, scratch)


def _read(sources: Iterable[ImageSource], preprocessing: Preprocessing, samples: int, *, where: str) -> Calibration:
    sources = list(sources)
    if not sources:
        raise QuantizationError(f"calibration: no images in {where}; pass a folder of images like those the "
                                f"model will see (at least {MIN_SAMPLES})")
    found = Calibration([], [])
    for source in sources:
        if len(found.inputs) == samples:
            break
        try:
            image = load_image(source.path)
        except DataError:
            found.unreadable.append(source.name)
            continue
        found.inputs.append(preprocess(image, preprocessing)[0][None])
        found.names.append(source.name)
    if len(found.inputs) < MIN_SAMPLES:
        unreadable = f"; unreadable: {', '.join(found.unreadable[:10])}" if found.unreadable else ""
        raise QuantizationError(f"calibration: {len(found.inputs)} readable image(s) in {where}, int8 needs at "
                                f"least {MIN_SAMPLES} to set its ranges{unreadable}; add images")
    if len(found.inputs) < samples:
        warnings.warn(f"calibration: {len(found.inputs)} images in {where}, fewer than the {samples} asked; "
                      "using them all", stacklevel=3)
    return found
