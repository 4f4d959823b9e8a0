"""What every vertebra backbone is: a ``features`` sequence plus the taps that make it multi-scale.

A family file (``efficientnet.py``, ``mobilenetv3.py`` ...) only describes its architecture as table
rows and builds ``features``; this module turns that into the feature contract:

* :class:`StridePlan` turns the paper's strides into ``(stride, dilation)`` pairs for a requested
  output stride, so *every* family can dilate its final stages (8/16/32), not only the ones
  torchvision happens to support.
* :class:`Backbone` runs ``features`` and returns the tapped levels as an ordered dict whose keys,
  channels and strides are exactly ``feature_info``; it also owns gradient checkpointing and freezing.

The module layout (``features.N...``) deliberately mirrors torchvision's classification models, so
their checkpoints load with nothing but a prefix mapping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..features import FeatureInfo, FeatureSpec
from ..inputs import check_batch
from ..norms import freeze_batchnorm

__all__ = ["Backbone", "BackboneMeta", "StridePlan", "FeaturesBuilder", "LayerRecord", "OUTPUT_STRIDES",
           "make_divisible"]

OUTPUT_STRIDES = (8, 16, 32)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without ever losing more than 10% (the TF rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class StridePlan:
    """Tracks the running stride and swaps stride for dilation once ``output_stride`` is reached.

    Rule (torchvision's MobileNetV3 ``dilated=True`` rule, applied to every family): the block that
    would exceed the output stride keeps stride 1 and, like every later block, multiplies its
    dilation by the stride it gave up.  The total receptive field is unchanged, the maps stay larger.
    """

    def __init__(self, output_stride: int = 32):
        if isinstance(output_stride, bool) or not isinstance(output_stride, int) or output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}",
                              path="output_stride")
        self.output_stride = output_stride
        self.stride = 1
        self.dilation = 1

    def step(self, stride: int) -> tuple[int, int]:
        """The ``(stride, dilation)`` a layer with the paper's ``stride`` gets under this plan."""
        if stride > 1 and self.stride * stride > self.output_stride:
            self.dilation *= stride
            return 1, self.dilation
        self.stride *= stride
        return stride, self.dilation


@dataclass(frozen=True)
class LayerRecord:
    """Where one entry of ``features`` sits: its position, the paper's stride, the effective stride, channels."""

    index: int
    nominal_stride: int
    stride: int
    channels: int


class FeaturesBuilder:
    """Collects the entries of ``features`` while a family walks its table, and derives the levels.

    A family calls :meth:`step` with the paper's stride of every strided layer (it returns the
    ``(stride, dilation)`` the layer must use under ``output_stride``) and :meth:`append` for every
    entry of ``features``; :meth:`last_of_each_stride` then gives the default levels.
    """

    def __init__(self, output_stride: int = 32):
        self.plan = StridePlan(output_stride)
        self.layers: list[nn.Module] = []
        self.records: list[LayerRecord] = []
        self._nominal = 1

    def step(self, stride: int) -> tuple[int, int]:
        """The ``(stride, dilation)`` for a layer whose paper stride is ``stride``."""
        self._nominal *= stride
        return self.plan.step(stride)

    def append(self, layer: nn.Module, channels: int) -> None:
        self.records.append(LayerRecord(len(self.layers), self._nominal, self.plan.stride, channels))
        self.layers.append(layer)

    def features(self) -> nn.Sequential:
        return nn.Sequential(*self.layers)

    def last_of_each_stride(self) -> list[FeatureSpec]:
        """Levels ``C1``..``C5``: the deepest entry of each nominal stride 2, 4, 8, 16, 32 (the default preset)."""
        last: dict[int, LayerRecord] = {}
        for record in self.records:
            last[record.nominal_stride] = record
        return [FeatureSpec(f"C{stride.bit_length() - 1}", r.channels, r.stride, r.index)
                for stride, r in sorted(last.items())]


@dataclass(frozen=True)
class BackboneMeta:
    """Facts about a variant that are not module structure: sizes, the classifier it ships with, the paper."""

    family: str
    default_size: int = 224
    eval_size: int | None = None          # EfficientNetV2 evaluates at a larger size than it trains
    classifier_dropout: float = 0.2
    classifier_hidden: int | None = None  # MobileNetV3's extra 1280/1024 linear layer
    torchvision_name: str | None = None   # the torchvision builder with this exact architecture
    paper: dict[str, Any] = field(default_factory=dict)  # e.g. {"params_m": 5.3, "macs_g": 0.39}


class LevelModule(nn.Module):
    """What any backbone derives from its levels, whoever wrote its layers (vertebra's families and
    the bridges' :class:`~vertebra.bridges._foreign.ForeignBackbone`).

    A subclass sets ``all_levels`` (every level, effective strides), ``feature_info`` (the returned
    ones) and ``_frozen_bn_eval`` (BatchNorm layers ``freeze(bn="eval")`` keeps in eval mode).
    """

    all_levels: FeatureInfo
    feature_info: FeatureInfo
    _frozen_bn_eval: list[nn.Module]

    @property
    def out_channels(self) -> int:
        """Channels of the deepest returned level (what a classifier pools)."""
        return self.feature_info[-1].channels

    @property
    def output_stride(self) -> int:
        return max(spec.stride for spec in self.all_levels)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen_bn_eval:   # frozen statistics stay frozen through model.train()
            module.eval()
        return self


class Backbone(LevelModule):
    """A multi-scale backbone: ``forward(x) -> OrderedDict[level name, Tensor]``.

    Args:
        features: the layers in order; level taps refer to positions in it.
        levels: every level this architecture offers, shallow to deep (effective strides).
        out_indices: which of ``levels`` to return (negative indices count from the deepest);
            ``None`` returns all.
        meta: facts for ``describe()`` and for heads (e.g. the family's classifier shape).
        in_channels: channels the stem expects, checked on every call.
    """

    def __init__(self, features: nn.Sequential, levels: Sequence[FeatureSpec], *,
                 out_indices: Sequence[int] | None = None, meta: BackboneMeta,
                 in_channels: int = 3):
        super().__init__()
        self.features = features
        self.all_levels = FeatureInfo(levels)
        self.feature_info = FeatureInfo(self.all_levels[i] for i in _normalise_indices(out_indices, len(levels)))
        self.meta = meta
        self.in_channels = in_channels
        self.grad_checkpointing = False
        self._frozen_bn_eval: list[nn.Module] = []
        # Later layers than the deepest requested tap never run.
        self._last_index = max(spec.index for spec in self.feature_info)
        self._taps = {spec.index: spec.name for spec in self.feature_info}

    # -- the contract -------------------------------------------------------------------------
    @property
    def weights_key_map(self):
        """How a torchvision classification checkpoint loads into this backbone.

        ``features.*`` names are torchvision's, so they load unchanged; ``classifier.*`` is dropped
        explicitly (and reported by :func:`vertebra.weights.load_weights`), never silently.
        """
        from ..weights import KeyMap

        return KeyMap.torchvision_classification()

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        self._check_input(x)
        out: OrderedDict[str, Tensor] = OrderedDict()
        use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
        for index, layer in enumerate(self.features):
            if index > self._last_index:
                break
            x = checkpoint(layer, x, use_reentrant=False) if use_checkpoint else layer(x)
            name = self._taps.get(index)
            if name is not None:
                out[name] = x
        return out

    def _check_input(self, x: Tensor) -> None:
        """The one input check (:func:`vertebra.inputs.check_batch`): type, dtype, device, shape, values."""
        smallest = self.output_stride
        check_batch(x, self, channels=self.in_channels, min_size=smallest,
                    what=f"backbone (deepest level at stride {smallest})")

    # -- training-time features ---------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> "Backbone":
        """Recompute each entry of ``features`` (a stage, or a block) in backward instead of storing it."""
        self.grad_checkpointing = bool(enable)
        return self

    def freeze(self, stages: int | None = None, bn: Literal["frozen", "eval", "train"] = "eval", *,
               taps_start_stages: bool = False) -> "Backbone":
        """Stop training the stem and the first ``stages`` stages (all when ``None``).

        Stages are counted over every level the architecture offers (``all_levels``), so the same
        call freezes the same layers whatever ``out_indices`` returns.  The one freezing rule of
        vertebra: the detectors' ``trainable_layers=k`` is ``freeze(len(all_levels) - k, bn="train")``.

        ``taps_start_stages`` says where a stage ends, which depends on the tap convention:

        * ``False`` (vertebra's default taps, the last block of a stride group): a stage ends at
          its tap, so everything up to and including the tap of level ``stages`` freezes.
        * ``True`` (torchvision's MobileNetV3 taps, the first block of a stage): a stage starts at
          its tap, so everything before the tap of level ``stages + 1`` freezes (all of
          ``features`` when ``stages`` covers every level) -- torchvision's
          ``_mobilenet_extractor`` rule for ``trainable_backbone_layers``, exactly.

        ``bn`` chooses what the frozen part's BatchNorm does: ``"eval"`` keeps running statistics
        fixed even in ``model.train()``; ``"frozen"`` swaps in ``FrozenBatchNorm2d`` (changes the
        state_dict keys: no ``num_batches_tracked``); ``"train"`` keeps updating statistics.
        """
        if bn not in ("frozen", "eval", "train"):
            raise ConfigError(f"bn must be 'frozen', 'eval' or 'train', got {bn!r}", path="bn")
        levels = len(self.all_levels)
        count = levels if stages is None else stages
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= levels:
            raise ConfigError(f"stages must be between 0 and {levels}, got {stages!r}", path="stages")
        if count == 0:
            return self
        if not taps_start_stages:
            stop = self.all_levels[count - 1].index + 1
        else:
            stop = len(self.features) if count == levels else self.all_levels[count].index
        for layer in list(self.features)[:stop]:
            for parameter in layer.parameters():
                parameter.requires_grad_(False)
            if bn == "frozen":
                freeze_batchnorm(layer)
            elif bn == "eval":
                self._frozen_bn_eval.extend(m for m in layer.modules()
                                            if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.train(self.training)
        return self



def _normalise_indices(out_indices: Sequence[int] | None, count: int) -> list[int]:
    if out_indices is None:
        return list(range(count))
    if isinstance(out_indices, int) or not all(isinstance(i, int) for i in out_indices):
        raise ConfigError(f"out_indices must be a list of integers, got {out_indices!r}", path="out_indices")
    resolved = []
    for i in out_indices:
        if not -count <= i < count:
            raise ConfigError(f"out_indices entry {i} is out of range: this backbone has {count} levels "
                              f"(valid indices 0..{count - 1}, or negative from the end)", path="out_indices")
        resolved.append(i % count)
    if not resolved or len(set(resolved)) != len(resolved):
        raise ConfigError(f"out_indices must be non-empty and without repeats, got {list(out_indices)}",
                          path="out_indices")
    return sorted(resolved)

