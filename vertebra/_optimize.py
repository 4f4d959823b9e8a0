"""The inference fast path: ``vertebra.optimize(model)`` returns a faster copy with the same outputs.

Eval-mode networks carry work that only training needs.  Each rewrite below removes some of it and
leaves the function the model computes unchanged (up to float rounding; ``tests/test_optimize.py``
checks every model family against the unoptimized one):

1. **Fold BatchNorm** into the convolution before it (any ``Conv2d`` followed by ``BatchNorm2d`` or
   ``FrozenBatchNorm2d`` inside an ``nn.Sequential``, which covers every ``Conv2dNormActivation``):
   ``bn(conv(x)) == conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.
2. **channels_last**: NHWC is the layout oneDNN's (CPU) and cuDNN's fast depthwise/1x1 kernels want;
   parameters are converted once and a forward pre-hook converts 4-D inputs.
3. **Fuse** (CPU, float32, oneDNN available): a convolution and the activation after it become one
   oneDNN primitive with a post-op (one pass over memory instead of two), reading weights oneDNN has
   reordered once for the input shape instead of on every call; squeeze-and-excitation and
   the 1x1 projection after it become one batched matmul whose per-image weights are pre-scaled by the
   SE gate, ``W @ (s * x) == (W * s) @ x``, so the SE multiply over the whole feature map disappears.
4. **Tile the early stages** of vertebra backbones (eager only): the stride-2 and stride-4 layers run
   one image at a time, so their large maps stay small enough for the allocator to reuse and the
   cache to hold (``Backbone._forward_tiled`` says why).  Outputs are the same per image.
5. **Fused graphs** for vertebra backbones (CPU, float32, eager only): each backbone runs as a frozen
   TorchScript trace that oneDNN Graph compiles into fused kernels, one per input shape
   (``vertebra/_graph.py``); rewrites 3 and 4 then apply only outside those backbones.
6. **torch.compile** on request, on top of the rewritten model.

The result is for inference only: ``train()`` on it would not bring BatchNorm back.  Optimize on the
device you will run on (the fused CPU kernels do not move to CUDA).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import SqueezeExcitation

from ._graph import InferenceGraph, graph_available
from .backbones._blocks import BlockSqueezeExcitation
from .backbones._folding import foldable
from .errors import ConfigError

__all__ = ["optimize", "OptimizationReport"]

# SE + projection runs as a batched matmul when the map has at least this many pixels per output
# channel (below it, reading per-image scaled weights costs more than scaling the map).  Measured on
# EfficientNet-B0's block shapes, batch 8, one thread (matmul vs multiply + oneDNN 1x1 conv):
# 112x112 96->24: 18 vs 61 ms; 56x56 144->40: 10 vs 11 ms; 14x14 480->112: 2.1 vs 1.7 ms;
# 7x7 1152->320: 5.6 vs 3.3 ms.
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


class OptimizationReport(dict):
    """What :func:`optimize` rewrote, as counts: ``{"folded_bn": 49, "fused_conv": 33, "fused_se": 16,
    "tiled_backbones": 1, ...}``."""


def optimize(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True, fuse: bool = True,
             tile: bool = True, graph: bool = True, compile: bool | dict[str, Any] = False,
             inplace: bool = False) -> nn.Module:
    """A faster inference copy of ``model`` whose outputs equal the original's within float tolerance.

    Args:
        model: any ``nn.Module`` (a vertebra backbone or model, or a torchvision one); its weights must
            be real (not on the ``meta`` device).
        fold_bn: fold eval-mode BatchNorm into the preceding convolution.
        channels_last: convert to NHWC and convert 4-D inputs on the way in.
        fuse: on CPU in float32, run conv + activation as one oneDNN kernel and merge
            squeeze-and-excitation into the following 1x1 projection (see the module docstring).
        tile: run the stride-2 and stride-4 stages of every vertebra backbone in the model one image
            at a time (without ``compile`` only: a compiled graph would unroll the loop per batch size).
        graph: on CPU in float32 (without ``compile``), run every vertebra backbone in the model as a
            frozen TorchScript trace that oneDNN Graph fuses, one per input shape (``vertebra/_graph.py``
            says why and how it stays correct); ``fuse`` and ``tile`` then apply to the rest of the model.
            The first call with a new input shape traces (about 0.6 s for EfficientNet-B0) and the two
            calls after it run unfused while TorchScript profiles the graph: warm up before timing.
        compile: ``True`` wraps the result in ``torch.compile``; a dict is passed to it as keyword
            arguments (``{"mode": "max-autotune"}``).
        inplace: rewrite ``model`` itself instead of a deep copy (saves memory for huge models; the
            caller's model then becomes inference-only too).  Default: the caller's model is untouched.

    Returns:
        The rewritten model in eval mode, with ``.optimization_report`` (an :class:`OptimizationReport`).
        Its ``state_dict`` differs from the original's (BatchNorm entries are gone): optimize after
        loading weights, and save the original.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"optimize() takes an nn.Module, got {type(model).__name__}")
    if not isinstance(compile, (bool, dict)):
        raise ConfigError(f"compile must be True, False or a dict of torch.compile arguments, got {compile!r}",
                          path="compile")
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        raise ConfigError("optimize() needs real weights, but this model is on the 'meta' device; build it "
                          "on a real device (or load weights into it) first")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    report = OptimizationReport(folded_bn=0, fused_conv=0, fused_se=0, tiled_backbones=0, graph_backbones=0,
                                channels_last=False, compiled=False)
    with torch.no_grad():
        if fold_bn:
            report["folded_bn"] = _fold_batchnorms(model)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            model.register_forward_pre_hook(_inputs_to_channels_last)
            report["channels_last"] = True
        cpu_float32 = _can_fuse(tensors)
        graphed = _run_backbones_as_graphs(model) if graph and compile is False and cpu_float32 else []
        report["graph_backbones"] = len(graphed)
        # Left eager: everything outside the graphed backbones (their fusion is oneDNN Graph's).
        skip = {id(m) for backbone in graphed for m in backbone.modules()}
        if fuse and cpu_float32:
            prepack = compile is False  # under torch.compile, inductor lays out weights itself
            report["fused_se"] = _fuse_squeeze_excitation(model, skip, prepack=prepack)
            report["fused_conv"] = _fuse_conv_activation(model, skip, prepack=prepack)
        if tile and compile is False:
            report["tiled_backbones"] = _tile_early_stages(model, skip)
    model.optimization_report = report
    if compile is not False:
        options = {} if compile is True else dict(compile)
        model = torch.compile(model, **options)
        report["compiled"] = True
    return model


# -- 1. BatchNorm folding -------------------------------------------------------------------------------
def _fold_batchnorms(root: nn.Module) -> int:
    """Fold every (Conv2d, BatchNorm) pair of adjacent ``nn.Sequential`` children; BN becomes Identity."""
    folded = 0
    for sequential in [m for m in root.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = sequential._modules[first], sequential._modules[second]
            if foldable(conv, bn):
                sequential._modules[first] = fuse_conv_bn_eval(conv, bn)
                sequential._modules[second] = nn.Identity()
                folded += 1
    return folded


# -- 2. channels_last ---------------------------------------------------------------------------------
def _inputs_to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, Tensor) and a.dim() == 4 else a
                 for a in args)


# -- 3. fusion -----------------------------------------------------------------------------------------
def _can_fuse(tensors: list[Tensor]) -> bool:
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


def _fuse_conv_activation(root: nn.Module, skip: set[int], *, prepack: bool) -> int:
    """Replace each plain Conv2d of a Sequential (and the activation right after it) by a FusedConv2d."""
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
    """torchvision's SqueezeExcitation (vertebra's blocks subclass it) with 1x1 fcs and its own forward."""
    return (type(module) in (SqueezeExcitation, BlockSqueezeExcitation)
            and isinstance(module.avgpool, nn.AdaptiveAvgPool2d) and module.avgpool.output_size in (1, (1, 1))
            and module.fc1.bias is not None and module.fc2.bias is not None)


def _fuse_squeeze_excitation(root: nn.Module, skip: set[int], *, prepack: bool) -> int:
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


# -- 4. tiling -------------------------------------------------------------------------------------------
_TILED_MAX_STRIDE = 4


def _backbones_in(root: nn.Module) -> list[nn.Module]:
    from .backbones import Backbone

    return [m for m in root.modules() if isinstance(m, Backbone)]


def _tile_early_stages(root: nn.Module, skip: set[int]) -> int:
    """Mark every vertebra Backbone under ``root`` to run its layers up to stride 4 image by image."""
    tiled = 0
    for backbone in [b for b in _backbones_in(root) if id(b) not in skip]:
        early = [spec.index for spec in backbone.all_levels if spec.stride <= _TILED_MAX_STRIDE]
        if early:
            backbone._tiled_entries = max(early) + 1
            tiled += 1
    return tiled


# -- 5. fused graphs -------------------------------------------------------------------------------------
def _run_backbones_as_graphs(root: nn.Module) -> list[nn.Module]:
    """Give every vertebra Backbone under ``root`` an :class:`InferenceGraph`; returns those backbones."""
    if not graph_available():
        return []
    backbones = _backbones_in(root)
    for backbone in backbones:
        backbone._inference_graph = InferenceGraph()
    return backbones
