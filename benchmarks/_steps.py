"""One inference call and one training step, built the same way for our models and every reference.

A step is a zero-argument callable; inputs, targets and the optimizer are made once, outside the
timed region.  Detection models take a list of images and targets (torchvision's convention);
segmentation losses cover every output (``out`` and ``aux``, or smp's plain tensor).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _harness import synchronize

__all__ = ["make_inputs", "inference_step", "train_step", "place", "maybe_compile", "loss_of", "calibrate_batchnorm"]


def place(model: nn.Module, variant: Any, *, train: bool) -> nn.Module:
    """Move to the variant's device and memory format and set train/eval mode."""
    model = model.to(variant.device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train(train)


def calibrate_batchnorm(model: nn.Module, images: Any) -> nn.Module:
    """Give every BatchNorm running statistics measured on ``images``, as a trained network has; eval mode.

    A freshly initialised network has running mean 0 and variance 1 in every layer, so in eval mode
    nothing normalises: activations drift towards overflow or denormals from layer to layer, and a CPU
    kernel's speed then depends on the random draw (seen: the same torchvision DeepLabV3 timed 52 or
    71 ms depending on which model was initialised first).  Inference cases calibrate ours and every
    reference the same way, so the timed work is a trained model's.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calibration batch
        norm.train()
    with torch.no_grad():
        model(images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        norm.eval()
    return model


def maybe_compile(model: nn.Module, variant: Any) -> nn.Module:
    """``torch.compile`` the model when the variant asks (after FLOPs were counted on the eager one)."""
    return torch.compile(model) if variant.compile else model


def make_inputs(task: str, batch: int, size: int, variant: Any, *, num_classes: int,
                seed: int = 0) -> tuple[Any, Any]:
    """``(images, targets)`` for a task: a tensor (or a list, for detection) and matching random targets."""
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(variant.device)
    images = torch.rand(batch, 3, size, size, generator=generator)
    if task in ("boxes", "masks"):
        targets = []
        for _ in range(batch):
            corner = torch.rand(2, 2, generator=generator) * size * 0.5
            extent = torch.rand(2, 2, generator=generator) * size * 0.4 + size * 0.1
            boxes = torch.cat([corner, corner + extent], dim=1).clamp(max=size - 1)
            target = {"boxes": boxes.to(device),
                      "labels": torch.randint(1, num_classes, (2,), generator=generator).to(device)}
            if task == "masks":
                masks = torch.zeros(2, size, size, dtype=torch.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                    masks[i, y0:y1, x0:x1] = 1
                target["masks"] = masks.to(device)
            targets.append(target)
        return [image.to(device) for image in images], targets
    images = images.to(device)
    if variant.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if task == "classification":
        return images, torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    return images, torch.randint(0, num_classes, (batch, size, size), generator=generator).to(device)


def _autocast(variant: Any):
    if variant.amp_dtype is None:
        return torch.autocast(variant.device, enabled=False)
    return torch.autocast(variant.device, dtype=variant.amp_dtype)


def inference_step(model: nn.Module, images: Any, variant: Any,
                   forward: Callable[[nn.Module, Any], Any] | None = None) -> Callable[[], Any]:
    """``model(images)`` under inference mode (and autocast); ``forward`` overrides the call."""
    device = torch.device(variant.device)
    call = forward or (lambda m, x: m(x))

    def step() -> Any:
        with torch.inference_mode(), _autocast(variant):
            out = call(model, images)
        synchronize(device)
        return out

    return step


def _segmentation_loss(outputs: Any, targets: Tensor) -> Tensor:
    if isinstance(outputs, Tensor):
        outputs = {"out": outputs}
    return sum(F.cross_entropy(logits.float(), targets) for logits in outputs.values())


def loss_of(model: nn.Module, task: str, images: Any, targets: Any) -> Tensor:
    """The training loss of one batch, whatever the task."""
    if task in ("boxes", "masks"):
        return sum(model(images, targets).values())
    if task == "classification":
        return F.cross_entropy(model(images).float(), targets)
    return _segmentation_loss(model(images), targets)


def train_step(model: nn.Module, task: str, images: Any, targets: Any, variant: Any) -> Callable[[], Tensor]:
    """Forward, loss, backward and an SGD step (small learning rate: weights barely move across rounds)."""
    device = torch.device(variant.device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=1e-4, momentum=0.9)

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(variant):
            loss = loss_of(model, task, images, targets)
        loss.backward()
        optimizer.step()
        synchronize(device)
        return loss.detach()

    return step
