"""Calibrated random-weight models and their int8 artifacts for the quantization tests (64 px).

A freshly initialised network has BatchNorm running statistics 0/1, so nothing normalises and
activations drift by orders of magnitude: no int8 range fits them, which tests nothing real.  Each
model here gets running statistics measured on the calibration images first (as training leaves a
network), then is saved as a float artifact and quantized from it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vertebra import registry
from vertebra.data import IMAGENET_MEAN, IMAGENET_STD, generate_shapes
from vertebra.weights.artifact import Preprocessing, save_artifact

SIZE = 64
PREPROCESSING = Preprocessing("square", SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)
TASK_OF = {"classifier": "classification", "lraspp": "semantic", "deeplabv3": "semantic"}
CLASS_NAMES = ("background", "circle", "square", "triangle")
# smallest variant of each family
FAMILIES = ("efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_small")
HEADS = ("classifier", "lraspp", "deeplabv3")

__all__ = ["SIZE", "PREPROCESSING", "FAMILIES", "HEADS", "calibrated_model", "float_artifact", "shapes_folder",
           "batch_of"]


def shapes_folder(root: Path) -> Path:
    """The built-in shapes set at 64 px: 16 training images (calibration) and 4 validation ones."""
    generate_shapes(root, num_train=16, num_val=4, image_size=SIZE, seed=0)
    return root


def batch_of(folder: Path) -> torch.Tensor:
    """Every image of ``folder`` preprocessed as the artifacts here do, as one batch."""
    from vertebra.deploy.images import find_images, load_image
    from vertebra.deploy.preprocess import preprocess

    return torch.stack([preprocess(load_image(s.path), PREPROCESSING)[0] for s in find_images(folder)])


def calibrated_model(head: str, backbone: str, images: torch.Tensor, num_classes: int | None = None) -> nn.Module:
    """``head`` on ``backbone`` with random weights (seeded) and BatchNorm statistics from ``images``."""
    torch.manual_seed(0)
    model = registry.build(head, backbone=backbone, num_classes=num_classes or len(CLASS_NAMES))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def float_artifact(head: str, backbone: str, images: torch.Tensor, path: Path) -> Path:
    model = calibrated_model(head, backbone, images)
    return save_artifact(path, model, task=TASK_OF[head], class_names=CLASS_NAMES, preprocessing=PREPROCESSING)
