"""Tiny artifacts and image folders for the deploy tests: random-weight mobilenet_v3_small models, 64 px."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vertebra import registry
from vertebra.data import IMAGENET_MEAN, IMAGENET_STD
from vertebra.weights.artifact import Preprocessing, save_artifact

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engine"))
from engine_helpers import TINY, tiny, write_image_folder  # noqa: E402  (the engine tests' tiny configs)

SHAPES = ("background", "circle", "square", "triangle")
IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
PREPROCESSING = {
    "detection": Preprocessing("none"),
    "instance": Preprocessing("none"),
    "semantic": Preprocessing("square", 64, **IMAGENET),
    "classification": Preprocessing("shorter_crop", 37, 32, **IMAGENET),
}
CLASS_NAMES = {"detection": SHAPES, "instance": SHAPES, "semantic": SHAPES,
               "classification": ("blue", "green", "red")}

__all__ = ["SHAPES", "PREPROCESSING", "CLASS_NAMES", "random_artifact", "mixed_folder", "tiny",
           "write_image_folder"]


def random_artifact(task: str, path: Path, *, category_ids=None, **metadata) -> Path:
    """An artifact of a random-weight tiny model of ``task`` (seeded: the same weights every time)."""
    torch.manual_seed(0)
    config = copy.deepcopy(TINY[task]["model"])
    config["num_classes"] = len(CLASS_NAMES[task])
    model = registry.build_from_config(config)
    return save_artifact(path, model, task=task, class_names=CLASS_NAMES[task],
                         preprocessing=PREPROCESSING[task], metadata=metadata, category_ids=category_ids)


def _pixels(height: int, width: int, seed: int) -> np.ndarray:
    """A bright square on a darker noisy background: something for a detector to look at."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(20, 90, (height, width, 3), dtype=np.uint8)
    pixels[height // 4: height // 2, width // 4: width // 2] = (230, 200, 40)
    return pixels


def mixed_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Images of several sizes and modes, and one corrupt file; returns ``{name: (H, W)}`` of the good ones."""
    root.mkdir(parents=True, exist_ok=True)
    rgb = _pixels(64, 96, 1)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(_pixels(80, 64, 2)[..., 0]).save(root / "grey.png")                       # mode L
    rgba = np.dstack([_pixels(72, 72, 3), np.full((72, 72), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "alpha.png")
    Image.fromarray(_pixels(64, 64, 4)).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    deep = (_pixels(64, 128, 5)[..., 0].astype(np.uint16) * 257)                              # 16-bit grey
    Image.fromarray(deep).save(root / "deep16.png")
    Image.fromarray(_pixels(96, 64, 6)).save(root / "photo.jpg", quality=90)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    (root / "notes.txt").write_text("not an image: skipped, not counted")
    return {"rgb.png": (64, 96), "grey.png": (80, 64), "alpha.png": (72, 72), "palette.png": (64, 64),
            "deep16.png": (64, 128), "photo.jpg": (96, 64)}
