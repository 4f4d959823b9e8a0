"""The inference fast path: ``vertebra.optimize(model)`` returns a faster copy with the same outputs.

Eval-mode networks carry work that only training needs.  Each rewrite below removes some of it and
leaves the function the model computes unchanged (up to float rounding; ``tests/inference/`` checks
every model family against the unoptimized one):

1. **Fold BatchNorm** into the convolution before it (any ``Conv2d`` followed by ``BatchNorm2d`` or
   ``FrozenBatchNorm2d`` inside an ``nn.Sequential``, which covers every ``Conv2dNormActivation``):
   ``bn(conv(x)) == conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.
2. **channels_last**: NHWC is the layout oneDNN's (CPU) and cuDNN's fast depthwise/1x1 kernels want;
   parameters are converted once and a forward pre-hook converts 4-D inputs.
3. **Fuse** (CPU, float32, oneDNN available): conv + activation as one oneDNN primitive, and
   squeeze-and-excitation merged into the 1x1 projection after it (:mod:`vertebra.inference.fusion`).
4. **Tile the early stages** of vertebra backbones (eager only): the stride-2 and stride-4 layers run
   one image at a time, so their large maps stay small enough for the allocator to reuse and the
   cache to hold (:mod:`vertebra.inference.backbone` says why).  Outputs are the same per image.
5. **Fused graphs** for vertebra backbones (CPU, float32, eager only): each backbone runs as a frozen
   TorchScript trace that oneDNN Graph compiles into fused kernels, one per input shape
   (:mod:`vertebra.inference.graph`); rewrites 3 and 4 then apply only outside those backbones.
6. **torch.compile** on request, on top of the rewritten model.

Tiling and graphs attach to a backbone from outside: its class is swapped for a subclass whose
forward tries them first (:func:`vertebra.inference.backbone.make_fast`).  The result is for
inference only: ``train()`` on it would not bring BatchNorm back.  Optimize on the device you will
run on (the fused CPU kernels do not move to CUDA).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ConfigError
from .backbone import run_backbones_as_graphs, tile_early_stages
from .folding import foldable
from .fusion import can_fuse, fuse_conv_activation, fuse_squeeze_excitation
from .graph import graph_available

__all__ = ["optimize", "OptimizationReport"]


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
            frozen TorchScript trace that oneDNN Graph fuses, one per input shape (:mod:`vertebra.inference.graph`
            says why and how it stays correct); ``fuse`` and ``tile`` then apply to the rest of the model.
            The first call with a new input shape traces (a noticeable pause) and the two calls after it
            run unfused while TorchScript profiles the graph: warm up before timing.
        compile: ``True`` wraps the result in ``torch.compile``; a dict is passed to it as keyword
            arguments (``{"mode": "max-autotune"}``).
        inplace: rewrite ``model`` itself instead of a deep copy (saves memory for huge models; the
            caller's model then becomes inference-only too).  Default: the caller's model is untouched.

    Returns:
        The rewritten model in eval mode, with ``.optimization_report`` (an :class:`OptimizationReport`).
        Its ``state_dict`` differs from the original's (BatchNorm entries are gone): optimize after
        loading weights, and save the original.
    """
    _check_arguments(model, compile)
    cpu_float32 = can_fuse([*model.parameters(), *model.buffers()])
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        report = _rewrite(model, fold_bn=fold_bn, channels_last=channels_last, fuse=fuse and cpu_float32,
                          tile=tile and compile is False,
                          graph=graph and compile is False and cpu_float32 and graph_available(),
                          prepack=compile is False)  # under torch.compile, inductor lays out weights itself
    model.optimization_report = report
    if compile is not False:
        options = {} if compile is True else dict(compile)
        model = torch.compile(model, **options)
        report["compiled"] = True
    return model


def _check_arguments(model: Any, compile: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"optimize() takes an nn.Module, got {type(model).__name__}")
    if not isinstance(compile, (bool, dict)):
        raise ConfigError(f"compile must be True, False or a dict of torch.compile arguments, got {compile!r}",
                          path="compile")
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ConfigError("optimize() needs real weights, but this model is on the 'meta' device; build it "
                          "on a real device (or load weights into it) first")


def _rewrite(model: nn.Module, *, fold_bn: bool, channels_last: bool, fuse: bool, tile: bool, graph: bool,
             prepack: bool) -> OptimizationReport:
    """Apply the rewrites that are switched on (and apply here), in order; count what each changed."""
    report = OptimizationReport(folded_bn=0, fused_conv=0, fused_se=0, tiled_backbones=0, graph_backbones=0,
                                channels_last=False, compiled=False)
    if fold_bn:
        report["folded_bn"] = _fold_batchnorms(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_inputs_to_channels_last)
        report["channels_last"] = True
    graphed = run_backbones_as_graphs(model) if graph else []
    report["graph_backbones"] = len(graphed)
    # Left eager: everything outside the graphed backbones (their fusion is oneDNN Graph's).
    skip = {id(m) for backbone in graphed for m in backbone.modules()}
    if fuse:
        report["fused_se"] = fuse_squeeze_excitation(model, skip, prepack=prepack)
        report["fused_conv"] = fuse_conv_activation(model, skip, prepack=prepack)
    if tile:
        report["tiled_backbones"] = tile_early_stages(model, skip)
    return report


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
