"""Optimizers and per-step learning-rate schedules from the config.

A note on RMSProp epsilon (MobileNetV3 / EfficientNet recipes): TensorFlow's RMSProp adds epsilon
*inside* the square root (``g / sqrt(v + eps)``), PyTorch's outside (``g / (sqrt(v) + eps)``).
The papers' ``eps=1e-3`` in TF therefore corresponds to ``eps ~= sqrt(1e-3) ~= 0.0316`` in PyTorch,
which is what torchvision's reference recipes pass.  We default RMSProp's eps to that value
(and ``alpha=0.9``, TF's decay) when the config leaves ``eps`` unset, so the recipe numbers from the
papers can be used unchanged; set ``optimizer.eps`` to override.
"""

from __future__ import annotations

import math
from collections.abc import Set

import torch
from torch import nn

from .config import OptimizerConfig, ScheduleConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "TF_RMSPROP_EPS"]

TF_RMSPROP_EPS = 0.0316   # sqrt(1e-3): TF's in-sqrt epsilon expressed outside the sqrt


def _param_groups(model: nn.Module, config: OptimizerConfig, backbone: Set[int], backbone_lr_mult: float) -> list[dict]:
    """Weights that decay and norm parameters + biases that don't (when asked), each split into the
    backbone's (learning rate ``lr * backbone_lr_mult``) and the rest's; empty groups left out.

    The head's groups come first, so ``param_groups[0]["lr"]`` (what the log records) is the base lr.
    """
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    split = config.no_weight_decay_norm and config.weight_decay != 0
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            no_decay = split and (isinstance(module, norm_types) or name == "bias")
            in_backbone = backbone_lr_mult != 1.0 and id(parameter) in backbone
            groups.setdefault((in_backbone, no_decay), []).append(parameter)
    return [{"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay,
             "lr": config.lr * (backbone_lr_mult if in_backbone else 1.0)}
            for (in_backbone, no_decay), params in sorted(groups.items())]


def build_optimizer(model: nn.Module, config: OptimizerConfig, *, backbone: Set[int] = frozenset(),
                    backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """SGD / AdamW / RMSProp over the trainable parameters of ``model``; the parameters whose ``id``
    is in ``backbone`` learn at ``backbone_lr_mult`` times the rate (``finetune.backbone_lr_mult``)."""
    groups = _param_groups(model, config, backbone, backbone_lr_mult)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas),
                                 eps=1e-8 if config.eps is None else config.eps)
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=config.alpha, momentum=config.momentum,
                               eps=TF_RMSPROP_EPS if config.eps is None else config.eps)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, config: ScheduleConfig) -> float:
    """The multiplier of the base lr at optimizer step ``step`` (0-based).  Pure, so it is easy to test."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        alpha = step / warmup
        return config.warmup_factor * (1 - alpha) + alpha
    if config.name == "constant":
        return 1.0
    if config.name == "step":
        epoch = step / max(steps_per_epoch, 1)
        return config.gamma ** sum(1 for milestone in config.milestones if epoch >= milestone)
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    floor = config.min_lr_ratio
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, *, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state_dict is just the step count."""
    total = epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, config))
