"""Multiply-accumulate counts measured by running a model under ``FlopCounterMode``.

Counting by execution (not by formula per layer type) means any module works, dilation and odd sizes
included; on the ``meta`` device it costs no memory and no arithmetic, so ``describe()`` can report
the MACs of EfficientNet-B7 at 600 px in a fraction of a second.  Like torchvision's ``_ops`` figures
(which come from the same counter), only convolutions and matrix products are counted; element-wise
work (BatchNorm, activations, the SE gate product) is not — the convention the papers use too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs"]


def count_macs(module: nn.Module, height: int, width: int, *, batch: int = 1,
               in_channels: int | None = None) -> int:
    """Multiply-accumulates of one forward pass of ``module`` on a ``batch x C x height x width`` input.

    The input is created on the device and dtype of the module's first parameter (``meta`` for a
    meta-built model).  The module runs in eval mode (dropout and stochastic depth off) and its
    training flag is restored afterwards.  ``in_channels`` defaults to ``module.in_channels`` or 3.
    """
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    channels = in_channels if in_channels is not None else getattr(module, "in_channels", 3)
    x = torch.zeros(batch, channels, height, width, device=device, dtype=dtype)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(x)
    finally:
        for m, training in modes:
            m.training = training
    return counter.get_total_flops() // 2
