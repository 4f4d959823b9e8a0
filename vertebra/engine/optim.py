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

import torch
from torch import nn

from .config import OptimizerConfig, ScheduleConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "TF_RMSPROP_EPS"]

TF_RMSPROP_EPS = 0.0316   # sqrt(1e-3): TF's in-sqrt epsilon expressed outside the sqrt


def _param_groups(model: nn.Module, weight_decay: float, no_decay_norm: bool) -> list[dict]:
    """Two groups: weights that decay, and norm parameters + biases that don't (when asked)."""
    if not no_decay_norm or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            (no_decay if isinstance(module, norm_types) or name == "bias" else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD / AdamW / RMSProp over the trainable parameters of ``model``."""
    groups = _param_groups(model, config.weight_decay, config.no_weight_decay_norm)
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
