"""BatchNorm helpers every layer shares: freeze to FrozenBatchNorm2d, set eps / momentum.

Backbones (``Backbone.freeze(bn="frozen")``), heads (the detectors' ``frozen_bn`` and torchvision's
BatchNorm settings) and the engine (the ``bn_momentum`` training option) all change BatchNorm layers
they did not build.  The walks live here, below all of them, so each rule has one implementation
and heads need not import a backbone module to use it.  Folding BatchNorm into convolutions for
inference is a different job (it removes layers) and lives with the inference fast path.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["freeze_batchnorm", "set_batchnorm"]


def freeze_batchnorm(module: nn.Module) -> None:
    """Replace every BatchNorm2d under ``module`` in place with a FrozenBatchNorm2d holding the same
    statistics and eps.

    torchvision's recipe for fine-tuning pretrained backbones, and the layout of its detection
    checkpoints (no ``num_batches_tracked``).  Works on the ``meta`` device too, where there are no
    values to copy, so the registry's shape-only probe sees the same module tree.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and child.affine and child.track_running_stats:
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.running_mean.device)
            if child.running_mean.device.type != "meta":
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)


def set_batchnorm(module: nn.Module, *, eps: float | None = None, momentum: float | None = None) -> None:
    """Give every BatchNorm under ``module`` this ``eps`` and/or ``momentum`` (``None`` leaves it).

    Settings, not parameters: the state_dict is unchanged.  A BatchNorm built with
    ``momentum=None`` keeps a cumulative average instead of a running one, so a rate does not apply
    to it and it is left alone.
    """
    for child in module.modules():
        if not isinstance(child, _BatchNorm):
            continue
        if eps is not None:
            child.eps = eps
        if momentum is not None and child.momentum is not None:
            child.momentum = momentum
