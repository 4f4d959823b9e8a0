"""The three inverted-residual blocks our families are made of, each able to dilate.

* :class:`InvertedResidual` — MobileNetV3's bottleneck (ReLU or hard-swish, optional hard-sigmoid SE).
* :class:`MBConv` — EfficientNet's block: expand 1x1, depthwise, SE squeezed from the block *input*, project.
* :class:`FusedMBConv` — EfficientNetV2's early-stage block: the expand 1x1 and the depthwise conv fused
  into one full kxk conv.

Blocks take plain arguments (the family file turns its table rows into them) and keep torchvision's
submodule names — ``block`` (an ``nn.Sequential`` of ``Conv2dNormActivation`` / ``SqueezeExcitation``
with ``fc1``/``fc2``) and ``stochastic_depth`` — so torchvision checkpoints load without renaming.

``stride`` and ``dilation`` are what :class:`~vertebra.backbones.StridePlan` hands out; ``residual`` is
decided by the family from the *paper's* stride, so a block that gave up its stride for dilation keeps
the architecture (and the weights) of the strided original, exactly as torchvision's ``dilated=True``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation, StochasticDepth

from ._base import make_divisible

__all__ = ["InvertedResidual", "MBConv", "FusedMBConv", "NormLayer", "init_weights"]

NormLayer = Callable[[int], nn.Module]


class _ResidualBlock(nn.Module):
    """``block(x)`` plus, for residual blocks, stochastic depth and the skip connection (torchvision's order)."""

    def __init__(self, layers: list[nn.Module], out_channels: int, residual: bool, drop_path: float):
        super().__init__()
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.use_res_connect = residual
        self.stochastic_depth = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += x
        return result


class InvertedResidual(_ResidualBlock):
    """MobileNetV3 bottleneck: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 (Howard et al. 2019, §5).

    The expand conv is omitted when ``expanded_channels == in_channels`` (the first bottleneck), as in
    the paper.  SE squeezes the *expanded* width to ``make_divisible(expanded // 4, 8)`` and gates with
    a hard sigmoid.
    """

    def __init__(self, in_channels: int, expanded_channels: int, out_channels: int, *, kernel: int,
                 stride: int, dilation: int, use_se: bool, activation: Callable[..., nn.Module],
                 norm_layer: NormLayer, residual: bool, drop_path: float = 0.0):
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(Conv2dNormActivation(in_channels, expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation))
        layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel_size=kernel,
                                           stride=stride, dilation=dilation, groups=expanded_channels,
                                           norm_layer=norm_layer, activation_layer=activation))
        if use_se:
            squeeze = make_divisible(expanded_channels // 4, 8)
            layers.append(SqueezeExcitation(expanded_channels, squeeze, scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(expanded_channels, out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))
        super().__init__(layers, out_channels, residual, drop_path)


class MBConv(_ResidualBlock):
    """EfficientNet's mobile inverted bottleneck with squeeze-and-excitation and SiLU (Tan & Le 2019).

    The expanded width is ``make_divisible(in_channels * expand_ratio, 8)``; the SE squeeze width is
    ``max(1, in_channels // 4)`` — a quarter of the block's *input*, not of the expanded width.
    """

    def __init__(self, in_channels: int, out_channels: int, *, expand_ratio: float, kernel: int,
                 stride: int, dilation: int, norm_layer: NormLayer, residual: bool, drop_path: float):
        expanded = make_divisible(in_channels * expand_ratio, 8)
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(Conv2dNormActivation(in_channels, expanded, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel_size=kernel, stride=stride,
                                           dilation=dilation, groups=expanded,
                                           norm_layer=norm_layer, activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, in_channels // 4),
                                        activation=partial(nn.SiLU, inplace=True)))
        layers.append(Conv2dNormActivation(expanded, out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))
        super().__init__(layers, out_channels, residual, drop_path)


class FusedMBConv(_ResidualBlock):
    """EfficientNetV2's Fused-MBConv: one full kxk conv expands (and strides), a 1x1 conv projects.

    With ``expand_ratio == 1`` the block is a single kxk conv + BN + SiLU (no projection), as in
    Tan & Le 2021, Table 4, stage 1.  Dilation goes to the kxk conv, the block's only spatial conv.
    """

    def __init__(self, in_channels: int, out_channels: int, *, expand_ratio: float, kernel: int,
                 stride: int, dilation: int, norm_layer: NormLayer, residual: bool, drop_path: float):
        expanded = make_divisible(in_channels * expand_ratio, 8)
        if expanded != in_channels:
            layers = [
                Conv2dNormActivation(in_channels, expanded, kernel_size=kernel, stride=stride,
                                     dilation=dilation, norm_layer=norm_layer, activation_layer=nn.SiLU),
                Conv2dNormActivation(expanded, out_channels, kernel_size=1,
                                     norm_layer=norm_layer, activation_layer=None),
            ]
        else:
            layers = [Conv2dNormActivation(in_channels, out_channels, kernel_size=kernel, stride=stride,
                                           dilation=dilation, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU)]
        super().__init__(layers, out_channels, residual, drop_path)


def init_weights(module: nn.Module) -> None:
    """torchvision's initialisation: He-normal (fan-out) convolutions, unit BatchNorm, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
