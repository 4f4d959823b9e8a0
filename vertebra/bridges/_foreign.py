"""A backbone made of someone else's module: their layers run, vertebra's feature contract wraps them.

The timm and torchvision bridges both end here.  Each finds, for its source, the module that
produces every level (``module_paths``) and which levels come out channels-last (torchvision's Swin
returns NHWC); :class:`ForeignBackbone` then returns them as vertebra's ordered dict, shallow to
deep, with exactly ``feature_info``'s names, channels and effective strides.

Freezing needs no knowledge of the source either: modules are registered in the order they run in
every timm and torchvision model (stem, stages, head), so "the first ``k`` stages" is every module
registered up to the end of the module that produces level ``k``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..backbones._base import BackboneMeta, LevelModule, _normalise_indices
from ..errors import ConfigError, IncompatibleError
from ..features import FeatureInfo, FeatureSpec
from ..inputs import check_batch
from ..norms import freeze_batchnorm
from ..validation import check_choice

__all__ = ["ForeignBackbone", "level_names", "effective_strides", "floors_sizes"]


def level_names(nominal_strides: Sequence[int]) -> list[str]:
    """vertebra's level names for the paper's strides: ``C{log2 stride}`` (``C3`` at stride 8).

    A stride met twice gets a suffix (``C4``, ``C4_2``: a ViT-style model keeps one stride); a
    stride that is no power of two is named ``S{stride}``.
    """
    names, seen = [], {}
    for stride in nominal_strides:
        base = f"C{stride.bit_length() - 1}" if stride > 0 and stride & (stride - 1) == 0 else f"S{stride}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def effective_strides(nominal_strides: Sequence[int], output_stride: int) -> list[int]:
    """Strides after dilating every stage beyond ``output_stride``: ``min(stride, output_stride)``."""
    return [min(stride, output_stride) for stride in nominal_strides]


class ForeignBackbone(LevelModule):
    """``body`` (another library's feature model) behind vertebra's feature contract.

    Args:
        body: returns one tensor per level of ``levels`` (a list, or a dict in level order).
        levels: every level ``body`` produces, shallow to deep, with effective strides.
        module_paths: the module inside ``body`` that produces each level (for :meth:`freeze`).
        out_indices: which levels to return (``None``: all; negative counts from the deepest).
        meta: the family facts heads read (classifier dropout, default size).
        channels_last: per level, whether ``body`` returns it as ``(N, H, W, C)``.
        source: how to name the model in messages (``"timm model 'resnet18'"``).
        pad: whether ``body`` floors odd sizes (pad the input, crop the levels); ``None``: find out
            with one small forward (:func:`floors_sizes`).
    """

    def __init__(self, body: nn.Module, levels: Sequence[FeatureSpec], *, module_paths: Sequence[str],
                 out_indices: Sequence[int] | None, meta: BackboneMeta, in_channels: int = 3,
                 channels_last: Sequence[bool] | None = None, source: str = "model", pad: bool | None = None):
        super().__init__()
        self.body = body
        self.all_levels = FeatureInfo(levels)
        self._selected = _normalise_indices(out_indices, len(levels))
        self.feature_info = FeatureInfo(self.all_levels[i] for i in self._selected)
        self.meta = meta
        self.in_channels = in_channels
        self.source = source
        self._module_paths = tuple(module_paths)
        self._channels_last = tuple(channels_last or (False,) * len(levels))
        self._frozen_bn_eval: list[nn.Module] = []
        self._pad = floors_sizes(body, self.all_levels, in_channels) if pad is None else pad

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        check_batch(x, self, channels=self.in_channels, min_size=self.output_stride,
                    what=f"backbone (deepest level at stride {self.output_stride})")
        height, width = x.shape[-2:]
        if self._pad:  # a patchify stem floors odd sizes: pad, then cut each level to ceil(H / stride)
            multiple = self.output_stride
            x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
        produced = self._run_body(x)
        values = list(produced.values()) if isinstance(produced, Mapping) else list(produced)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for index in self._selected:
            spec, tensor = self.all_levels[index], values[index]
            tensor = tensor.permute(0, 3, 1, 2) if self._channels_last[index] else tensor
            if self._pad:
                tensor = tensor[..., :-(-height // spec.stride), :-(-width // spec.stride)]
            out[spec.name] = tensor
        return out

    def _run_body(self, x: Tensor) -> Any:
        """``body(x)``; a bridge that checkpoints its stages runs them here instead."""
        return self.body(x)

    # -- training-time features -------------------------------------------------------------
    def freeze(self, stages: int | None = None, bn: Literal["frozen", "eval", "train"] = "eval", *,
               taps_start_stages: bool = False) -> "ForeignBackbone":
        """Stop training the stem and the first ``stages`` stages (all when ``None``), as
        :meth:`vertebra.backbones.Backbone.freeze` does; a stage ends at the module producing its level.

        ``taps_start_stages`` is accepted for the contract and changes nothing: a foreign model's
        taps are always the ends of their stages.
        """
        check_choice(bn, ("frozen", "eval", "train"), "bn")
        levels = len(self.all_levels)
        count = levels if stages is None else stages
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= levels:
            raise ConfigError(f"stages must be between 0 and {levels}, got {stages!r}", path="stages")
        frozen = self._stem_and_stages(count)
        for _, module in frozen:
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)
        norms = [(name, m) for name, m in frozen if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bn == "eval":
            self._frozen_bn_eval.extend(m for _, m in norms)
        elif bn == "frozen":
            for name, norm in norms:
                _swap_frozen(self.body, name, norm)
            self.__dict__.pop("_stages", None)  # a bridge's cached stage graphs held the old modules
        self.train(self.training)
        return self

    def _stem_and_stages(self, count: int) -> list[tuple[str, nn.Module]]:
        """Every module of ``body`` registered up to the end of the module producing level ``count``."""
        if count == 0:
            return []
        path = self._module_paths[count - 1]
        modules = list(self.body.named_modules())
        inside = [i for i, (name, _) in enumerate(modules) if name == path or name.startswith(path + ".")]
        if not inside:
            raise IncompatibleError(f"{self.source}: cannot freeze, no module {path!r} produces level "
                                    f"{self.all_levels[count - 1].name}")
        return modules[1:inside[-1] + 1]


def floors_sizes(body: nn.Module, levels: FeatureInfo, in_channels: int) -> bool:
    """Whether ``body`` makes ``floor(H / s)`` maps of an odd-sized input (a stride-4 patchify stem does)
    where the contract says ``ceil``; tried once with one small odd input, on the body's own device."""
    deepest = max(levels.strides())
    parameter = next(iter(body.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    height, width = 2 * deepest + 1, 3 * deepest + 1
    training = body.training
    try:
        body.eval()
        with torch.no_grad():
            produced = body(torch.zeros(1, in_channels, height, width, device=device))
    except Exception:  # noqa: BLE001 - a fixed-size model (ViT): not padded, its own check speaks
        return False
    finally:
        body.train(training)
    values = list(produced.values()) if isinstance(produced, Mapping) else list(produced)
    return any(-(-height // spec.stride) not in tuple(tensor.shape) for spec, tensor in zip(levels, values))


def _swap_frozen(body: nn.Module, name: str, norm: nn.Module) -> None:
    """Replace the BatchNorm ``name`` of ``body`` by a FrozenBatchNorm2d (vertebra.norms does the copy)."""
    parent, _, attribute = name.rpartition(".")
    holder = body.get_submodule(parent) if parent else body
    carrier = nn.Module()
    carrier.add_module("norm", norm)
    freeze_batchnorm(carrier)
    setattr(holder, attribute, carrier.norm)
