"""oneDNN fusion rewrites for :func:`vertebra.optimize` (CPU, float32, inference).

* **conv + activation** become one oneDNN convolution with a post-op (one pass over memory instead
  of two), reading weights oneDNN has reordered once for the input shape instead of on every call
  (:class:`FusedConv2d`).
* **squeeze-and-excitation + the 1x1 projection after it** become one batched matmul whose
  per-image weights are pre-scaled by the SE gate, ``W @ (s * x) == (W * s) @ x``, so the SE
  multiply over the whole feature map disappears where that pays (:class:`SqueezeExciteProject`).

Both rewrite children of ``nn.Sequential`` modules in place and count what they changed.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation

__all__ = ["FusedConv2d", "SqueezeExciteProject", "can_fuse", "fuse_conv_activation", "fuse_squeeze_excitation"]

# SE + projection runs as a batched matmul when the map has at least this many pixels per output
# channel: below it, reading per-image scaled weights costs more than scaling the map (measured on
# EfficientNet-B0's block shapes; benchmarks/README.md has the table).
_BMM_MIN_PIXELS_PER_OUTPUT = 4

# Activation module -> (oneDNN post-op name, scalars, algorithm) for the fused conv kernel.
_POST_OPS: dict[type, Callable[[nn.Module], tuple[str, list, str]]] = {
    nn.ReLU: lambda m: ("relu", [], ""),
    nn.ReLU6: lambda m: ("hardtanh", [0.0, 6.0], ""),
    nn.Hardtanh: lambda m: ("hardtanh", [float(m.min_val), float(m.max_val)], ""),
    nn.Hardswish: lambda m: ("hardswish", [], ""),
    nn.Hardsigmoid: lambda m: ("hardsigmoid", [], ""),
    nn.SiLU: lambda m: ("swish", [], ""),
    nn.Sigmoid: lambda m: ("sigmoid", [], ""),
    nn.Tanh: lambda m: ("tanh", [], ""),
    nn.GELU: lambda m: ("gelu", [], m.approximate),
    nn.LeakyReLU: lambda m: ("leaky_relu", [float(m.negative_slope)], ""),
}


def can_fuse(tensors: list[Tensor]) -> bool:
    """Whether the oneDNN fused kernels apply: every floating tensor on the CPU in float32, oneDNN built in."""
    return (bool(tensors) and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors
                                  if t.is_floating_point())
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _next_real(sequential: nn.Sequential, names: list[str], start: int) -> int | None:
    """Index of the first child at or after ``start`` that is not an Identity left by an earlier rewrite."""
    for i in range(start, len(names)):
        if not isinstance(sequential._modules[names[i]], nn.Identity):
            return i
    return None


class FusedConv2d(nn.Module):
    """``act(conv(x))`` as one oneDNN convolution with a post-op (CPU, float32, inference).

    Keeps ``weight``/``bias`` as ordinary parameters (so the model can still be copied, moved and
    saved).  With ``prepack`` (the default) the kernel reads a copy of the weight that oneDNN has
    reordered once into its blocked layout for the current input shape, instead of reordering it on
    every call; the copy is a cache (rebuilt when the input shape or the weight changes, never saved
    or copied) and costs one more weight's worth of memory.
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None, *, prepack: bool = True):
        super().__init__()
        post_op = ("none", [], "") if activation is None else _POST_OPS[type(activation)](activation)
        self.attr, self.scalars, self.algorithm = post_op
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.weight = nn.Parameter(conv.weight.detach(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.prepack = prepack
        self._packed: tuple[tuple, Tensor] | None = None

    def _kernel_weight(self, x: Tensor) -> Tensor:
        if not self.prepack:
            return self.weight
        key = (tuple(x.shape), self.weight.data_ptr(), self.weight._version)
        if self._packed is None or self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(self.weight, self.padding, self.stride,
                                                                  self.dilation, self.groups, list(x.shape))
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:  # nn.Conv2d also takes one unbatched image
            return self.forward(x.unsqueeze(0)).squeeze(0)
        return torch.ops.mkldnn._convolution_pointwise(x, self._kernel_weight(x), self.bias, self.padding,
                                                       self.stride, self.dilation, self.groups, self.attr,
                                                       self.scalars, self.algorithm)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = None  # oneDNN's opaque copy is a cache: rebuilt on the next call
        return state

    def extra_repr(self) -> str:
        in_channels, out_channels = self.weight.shape[1] * self.groups, self.weight.shape[0]
        return (f"{in_channels}, {out_channels}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={tuple(self.stride)}, groups={self.groups}, post_op={self.attr}, prepack={self.prepack}")


def _fusable_conv(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and module.weight.dim() == 4)


def fuse_conv_activation(root: nn.Module, skip: set[int], *, prepack: bool) -> int:
    """Replace each plain Conv2d of a Sequential (and the activation right after it) by a FusedConv2d,
    outside the modules whose ids are in ``skip``."""
    fused = 0
    for sequential in [m for m in root.modules() if isinstance(m, nn.Sequential) and id(m) not in skip]:
        names = list(sequential._modules)
        for i, name in enumerate(names):
            conv = sequential._modules[name]
            if not _fusable_conv(conv):
                continue
            j = _next_real(sequential, names, i + 1)
            activation = sequential._modules[names[j]] if j is not None else None
            if activation is not None and type(activation) in _POST_OPS:
                sequential._modules[names[j]] = nn.Identity()
            else:
                activation = None
            sequential._modules[name] = FusedConv2d(conv, activation, prepack=prepack)
            fused += 1
    return fused


class SqueezeExciteProject(nn.Module):
    """Squeeze-and-excitation followed by a 1x1 projection conv, without the SE multiply where it pays.

    ``conv1x1(x * s) == (W * s) @ x`` per image: on large maps (early stages) the gate scales the small
    ``(out, in)`` weight instead of the whole ``(in, H, W)`` feature map, and one batched matmul reads
    the NHWC map as a ``(HW, in)`` matrix without copying it.  On small maps with wide channels the
    per-image weights would outweigh the map, so the gate multiplies the map and a oneDNN 1x1 conv
    projects (both exact; chosen per call from the shape).  The gate itself is two small matmuls on the
    pooled vector instead of two 1x1 convolutions.
    """

    def __init__(self, se: SqueezeExcitation, conv: nn.Conv2d, *, prepack: bool = True):
        super().__init__()
        squeeze = se.fc1.out_channels
        self.fc1_weight = nn.Parameter(se.fc1.weight.detach().reshape(squeeze, -1), requires_grad=False)
        self.fc1_bias = nn.Parameter(se.fc1.bias.detach(), requires_grad=False)
        self.fc2_weight = nn.Parameter(se.fc2.weight.detach().reshape(-1, squeeze), requires_grad=False)
        self.fc2_bias = nn.Parameter(se.fc2.bias.detach(), requires_grad=False)
        self.activation, self.scale_activation = se.activation, se.scale_activation
        self.project = FusedConv2d(conv, None, prepack=prepack)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        gate = x.mean((2, 3))
        gate = self.activation(F.linear(gate, self.fc1_weight, self.fc1_bias))
        gate = self.scale_activation(F.linear(gate, self.fc2_weight, self.fc2_bias))
        weight, bias = self.project.weight, self.project.bias
        out_channels = weight.shape[0]
        if h * w < _BMM_MIN_PIXELS_PER_OUTPUT * out_channels or not x.is_contiguous(memory_format=torch.channels_last):
            return self.project(x * gate.view(n, c, 1, 1))
        scaled = gate.unsqueeze(1) * weight.view(1, out_channels, c)  # (n, out, in): gate folded into the weight
        rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: NHWC already is (HW, C) per image
        if bias is None:
            out = torch.bmm(rows, scaled.transpose(1, 2))
        else:
            out = torch.baddbmm(bias, rows, scaled.transpose(1, 2))
        return out.view(n, h, w, out_channels).permute(0, 3, 1, 2)


def _is_projection(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.groups == 1 and conv.padding in ((0, 0), "valid"))


def _projection_of(module: nn.Module) -> nn.Conv2d | None:
    """The 1x1 conv that ``module`` amounts to after folding (a bare conv, or Sequential(conv, Identity...))."""
    if _is_projection(module):
        return module
    if isinstance(module, nn.Sequential) and len(module) > 0 and _is_projection(module[0]):
        if all(isinstance(rest, nn.Identity) for rest in list(module)[1:]):
            return module[0]
    return None


def _is_squeeze_excitation(module: nn.Module) -> bool:
    """torchvision's SqueezeExcitation (its own forward, not a subclass's) with 1x1 fcs."""
    return (type(module) is SqueezeExcitation
            and isinstance(module.avgpool, nn.AdaptiveAvgPool2d) and module.avgpool.output_size in (1, (1, 1))
            and module.fc1.bias is not None and module.fc2.bias is not None)


def fuse_squeeze_excitation(root: nn.Module, skip: set[int], *, prepack: bool) -> int:
    """Outside ``skip``, merge each SE of a Sequential and the 1x1 projection after it into a SqueezeExciteProject."""
    fused = 0
    for sequential in [m for m in root.modules() if isinstance(m, nn.Sequential) and id(m) not in skip]:
        names = list(sequential._modules)
        for i, name in enumerate(names):
            if not _is_squeeze_excitation(sequential._modules[name]):
                continue
            j = _next_real(sequential, names, i + 1)
            conv = _projection_of(sequential._modules[names[j]]) if j is not None else None
            if conv is None:
                continue
            sequential._modules[names[j]] = SqueezeExciteProject(sequential._modules[name], conv, prepack=prepack)
            sequential._modules[name] = nn.Identity()
            fused += 1
    return fused


