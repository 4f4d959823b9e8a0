"""Eager BatchNorm folding: a ``Conv2dNormActivation`` that folds its BatchNorm into the conv at inference.

In eval mode BatchNorm is a fixed per-channel affine map, ``bn(conv(x)) == conv'(x)`` with
``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta``.  Running it as its own
op costs a full read, write and fresh allocation of every feature map.  On CPU that is most of what
separates these networks from their matmul floor: early-stage maps at batch 8 are above glibc's
mmap threshold, so each allocation page-faults anew on every call.  Folding on the fly removes the
pass (benchmarks/README.md has the measured eager ratios against torchvision).

Why eager and not only in :func:`vertebra.optimize`: :class:`FoldingConv2dNormActivation` keeps
torchvision's submodules and state_dict keys (``0`` conv, ``1`` norm, ``2`` activation), so the model
still loads torchvision checkpoints strictly, still trains, and gets the fold without a separate
optimized copy.  Backbones build torchvision's plain class; :func:`vertebra.inference.attach_eager`
swaps the class from outside (the registry does it for every model it builds).

The folded path runs only when nothing can observe the difference: the module and its norm are in
eval mode, autograd is off (``torch.no_grad`` / ``torch.inference_mode``), the norm is a BatchNorm
with running statistics, no forward hook waits on the conv or the norm (feature probes and
quantization observers must see torchvision's calls), and no tracer or compiler is recording the
graph (ONNX export and ``torch.compile`` see the plain conv/BN/activation ops and do their own
fusions).  The folded weights are recomputed on every call (a few small ops per layer, a small
fraction of the saving), so there is no cache that could go stale when weights or statistics
change.  Results equal the unfolded path up to float rounding; ``with inference_folding(False):``
restores the separate BatchNorm op, bit for bit torchvision's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["FoldingConv2dNormActivation", "fold_conv_norm_activations", "foldable", "inference_folding",
           "context_value", "observed"]

_FOLDING: ContextVar[bool] = ContextVar("vertebra_inference_folding", default=True)
_FOLDABLE_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm(conv(x))`` can be one convolution: a plain Conv2d (or a subclass that declares
    ``folds_as_conv2d``: its output is a convolution by its own weight and bias), then a BatchNorm (or
    FrozenBatchNorm2d) with running statistics for each of its output channels.  Shared with
    :func:`vertebra.optimize`, which folds the same pairs once and for all."""
    plain_conv = type(conv) is nn.Conv2d or getattr(type(conv), "folds_as_conv2d", False)
    return (plain_conv and isinstance(norm, _FOLDABLE_NORMS)
            and getattr(norm, "running_mean", None) is not None and getattr(norm, "running_var", None) is not None
            and norm.running_mean.numel() == conv.out_channels)


@contextlib.contextmanager
def inference_folding(enabled: bool) -> Iterator[None]:
    """Turn BatchNorm folding in inference on or off inside the ``with`` block (this thread/task only).

    Folding is on by default (for models whose layers :func:`~vertebra.inference.attach_eager` made
    folding ones).  Turn it off to reproduce a torchvision model bit for bit, or to time the
    unfolded network.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"inference_folding() takes True or False, got {enabled!r}")
    with context_value(_FOLDING, enabled):
        yield


@contextlib.contextmanager
def context_value(variable: ContextVar[bool], value: bool) -> Iterator[None]:
    """Set a context variable inside the ``with`` block and restore it after (this thread/task only)."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def _global_forward_hooks() -> bool:
    """Whether ``nn.modules.module.register_module_forward_(pre_)hook`` hooks exist: every module call runs them."""
    module = torch.nn.modules.module
    return bool(getattr(module, "_global_forward_hooks", None) or getattr(module, "_global_forward_pre_hooks", None))


def observed(*modules: nn.Module) -> bool:
    """Whether a forward hook (a module's own or a global one) would see a call to any of ``modules``."""
    return _global_forward_hooks() or any(m._forward_hooks or m._forward_pre_hooks for m in modules)


class FoldingConv2dNormActivation(Conv2dNormActivation):
    """torchvision's ``Conv2dNormActivation`` (same arguments, submodules and state_dict) that folds
    its BatchNorm into the convolution when run for inference (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._can_fold(x):
            return super().forward(x)
        modules = iter(self._modules.values())
        conv, norm = next(modules), next(modules)
        # The fold by hand rather than torch.nn.utils.fusion.fuse_conv_bn_weights: that one wraps its
        # results in new Parameters and fills zero biases, a measurable cost per layer on every call.
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        shift = norm.bias - norm.running_mean * scale
        bias = shift if conv.bias is None else torch.addcmul(shift, conv.bias, scale)
        x = conv._conv_forward(x, weight, bias)
        for layer in modules:
            x = layer(x)
        return x

    def _can_fold(self, x: Tensor) -> bool:
        if self.training or torch.is_grad_enabled() or not _FOLDING.get():
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return False
        if len(self) < 2 or not isinstance(x, Tensor):
            return False
        conv, norm = self[0], self[1]
        if observed(conv, norm):  # the fold calls neither module
            return False
        return (foldable(conv, norm) and not norm.training
                and norm.weight is not None and norm.bias is not None)


def fold_conv_norm_activations(module: nn.Module) -> int:
    """Make every plain torchvision ``Conv2dNormActivation`` under ``module`` a folding one, in place.

    Only the class changes (the subclass has no state of its own): parameters, buffers, hooks and
    state_dict keys stay as they are.  Subclasses of ``Conv2dNormActivation`` keep their own
    behaviour.  Returns how many layers were changed.
    """
    changed = 0
    for layer in module.modules():
        if type(layer) is Conv2dNormActivation:
            layer.__class__ = FoldingConv2dNormActivation
            changed += 1
    return changed
