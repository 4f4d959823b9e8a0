"""The optimized backbone: a fused graph first, else the early stages tiled, else the plain forward.

:func:`vertebra.optimize` attaches both from outside, as the atrous shortcut and eager folding do:
it swaps each vertebra :class:`~vertebra.backbones.Backbone`'s class for a subclass
(:func:`make_fast`) whose ``forward`` tries the attached :class:`~vertebra.inference.graph.InferenceGraph`,
then tiling, and otherwise falls back to the backbone's own ``forward``.  The subclass has no state
dict entries of its own; it is made once per backbone class (plugins may subclass ``Backbone``), so
it pickles through :func:`_rebuild` rather than by its (generated) name.

**Tiling** (eager inference, batches of more than one image): the layers up to stride 4 run one
image at a time.  At batch 8 the stride-2 and stride-4 maps are tens of MB each, above glibc's mmap
threshold, so every one is freshly mapped and page-faulted on every call; one image at a time they
are a few MB, reused from the allocator's free lists and still warm in cache.  Outputs are the same
per image.
"""

from __future__ import annotations

import copyreg
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones import Backbone
from .graph import InferenceGraph

__all__ = ["FastBackbone", "TILED_MAX_STRIDE", "backbones_in", "make_fast", "run_backbones_as_graphs",
           "tile_early_stages"]

TILED_MAX_STRIDE = 4
_FAST_CLASSES: dict[type, type] = {}


class FastBackbone:
    """Mixin placed before a backbone's own class; :func:`make_fast` builds the concrete subclass."""

    _plain_class: type
    _inference_graph: InferenceGraph | None = None
    _tiled_entries = 0  # run features[:n] one image at a time

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        if self.training or torch.is_grad_enabled():
            return super().forward(x)
        self._check_input(x)
        if self._inference_graph is not None:
            fused = self._inference_graph(self, x)
            if fused is not None:
                return fused
        if self._tiled_entries and not torch.jit.is_tracing() and x.shape[0] > 1:
            return self._forward_tiled(x)
        return super().forward(x)

    def _forward_tiled(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """The first ``_tiled_entries`` layers image by image (see the module docstring), then the rest."""
        stop = min(self._tiled_entries, self._last_index + 1)
        per_image = [self._run_layers(image, 0, stop) for image in x.split(1)]
        out = OrderedDict((name, torch.cat([levels[name] for _, levels in per_image])) for name in per_image[0][1])
        x, deeper = self._run_layers(torch.cat([image for image, _ in per_image]), stop, self._last_index + 1)
        out.update(deeper)
        return out

    def _run_layers(self, x: Tensor, start: int, stop: int) -> tuple[Tensor, "OrderedDict[str, Tensor]"]:
        levels: OrderedDict[str, Tensor] = OrderedDict()
        for index in range(start, stop):
            x = self.features[index](x)
            if index in self._taps:
                levels[self._taps[index]] = x
        return x, levels

    def __reduce_ex__(self, protocol: Any) -> tuple:
        # The class is generated: pickle the plain class it derives from and rebuild it on load.
        reduced = super().__reduce_ex__(protocol)
        return (_rebuild, (self._plain_class,), *reduced[2:])


def _fast_class(cls: type) -> type:
    fast = _FAST_CLASSES.get(cls)
    if fast is None:
        # Same name as the plain class, so the model's repr reads as before.
        fast = type(cls.__name__, (FastBackbone, cls), {"__module__": __name__, "_plain_class": cls,
                                                         "__qualname__": f"FastBackbone[{cls.__qualname__}]"})
        _FAST_CLASSES[cls] = fast
    return fast


def _rebuild(cls: type) -> nn.Module:
    """An empty instance of ``cls``'s fast subclass, for pickle and copy (they restore its state)."""
    fast = _fast_class(cls)
    return copyreg.__newobj__(fast)


def make_fast(backbone: Backbone) -> Backbone:
    """Swap ``backbone``'s class for its fast subclass, in place (nothing else changes); returns it."""
    if not isinstance(backbone, FastBackbone):
        backbone.__class__ = _fast_class(type(backbone))
    return backbone


def backbones_in(root: nn.Module) -> list[Backbone]:
    """Every vertebra Backbone under ``root`` (``root`` included)."""
    return [m for m in root.modules() if isinstance(m, Backbone)]


def tile_early_stages(root: nn.Module, skip: set[int]) -> int:
    """Make every vertebra Backbone under ``root`` (outside ``skip``) run its layers up to stride 4 image by image."""
    tiled = 0
    for backbone in [b for b in backbones_in(root) if id(b) not in skip]:
        early = [spec.index for spec in backbone.all_levels if spec.stride <= TILED_MAX_STRIDE]
        if early:
            make_fast(backbone)._tiled_entries = max(early) + 1
            tiled += 1
    return tiled


def run_backbones_as_graphs(root: nn.Module) -> list[Backbone]:
    """Give every vertebra Backbone under ``root`` an :class:`InferenceGraph`; returns those backbones."""
    backbones = backbones_in(root)
    for backbone in backbones:
        make_fast(backbone)._inference_graph = InferenceGraph()
    return backbones
