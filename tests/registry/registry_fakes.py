"""A small fake plugin for registry tests: backbones and heads with known shapes, no built-ins needed."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from vertebra.backbones import Backbone, BackboneMeta, StridePlan
from vertebra.features import FeatureSpec
from vertebra.heads import Requirements, requires
from vertebra.plugins import hookimpl

# Every fake factory call appends the default device it ran under: "meta" for probes, "cpu" for real builds.
CALLS: list[tuple[str, str]] = []


def pyramid(*, width: int = 4, out_indices: Sequence[int] | None = None, output_stride: int = 32,
            levels: int = 5) -> Backbone:
    """A tiny test pyramid: ``levels`` strided 3x3 convs.

    Second paragraph that the summary leaves out.
    """
    CALLS.append(("pyramid", str(torch.empty(0).device)))
    plan = StridePlan(output_stride)
    layers, specs, channels = [], [], 3
    for index in range(levels):
        stride, dilation = plan.step(2)
        layers.append(Conv2dNormActivation(channels, width * 2 ** index, 3, stride=stride, dilation=dilation))
        channels = width * 2 ** index
        specs.append(FeatureSpec(f"C{index + 1}", channels, plan.stride, index))
    return Backbone(nn.Sequential(*layers), specs, out_indices=out_indices,
                    meta=BackboneMeta(family="pyramid", default_size=64))


def flat(*, width: int = 4) -> Backbone:
    """Two levels (strides 2 and 4) and no output_stride option."""
    CALLS.append(("flat", str(torch.empty(0).device)))
    layers = [Conv2dNormActivation(3, width, 3, stride=2), Conv2dNormActivation(width, width, 3, stride=2)]
    specs = [FeatureSpec("C1", width, 2, 0), FeatureSpec("C2", width, 4, 1)]
    return Backbone(nn.Sequential(*layers), specs, meta=BackboneMeta(family="flat", default_size=32))


def picky(*, output_stride: int = 32) -> Backbone:
    """Accepts output_stride but refuses anything but 32 (as a backbone without dilation would)."""
    from vertebra.errors import ConfigError

    if output_stride != 32:
        raise ConfigError(f"picky supports only output_stride=32, got {output_stride}", path="output_stride")
    return pyramid(output_stride=32)


class DenseModel(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.low = nn.Conv2d(backbone.feature_info["C3"].channels, num_classes, 1)
        self.high = nn.Conv2d(backbone.feature_info[-1].channels, num_classes, 1)

    def forward(self, x):
        features = self.backbone(x)
        high = nn.functional.interpolate(self.high(features[self.backbone.feature_info[-1].name]),
                                         size=features["C3"].shape[-2:], mode="bilinear")
        out = self.low(features["C3"]) + high
        return {"out": nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear")}


@requires(lambda *, output_stride=16, **_: Requirements(backbone_kwargs={"output_stride": output_stride},
                                                        strides=(8,), min_levels=2))
def dense(backbone: Backbone, *, num_classes: int = 3, output_stride: int = 16) -> nn.Module:
    """A dense test head: a stride-8 level plus the deepest one, at output stride 16 (or 8)."""
    return DenseModel(backbone, num_classes)


class PoolModel(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x):
        deepest = list(self.backbone(x).values())[-1]
        return self.fc(deepest.mean((-2, -1)))


def pool(backbone: Backbone, *, num_classes: int = 5, hidden: int = 0) -> nn.Module:
    """A pooling classifier test head that takes any backbone."""
    return PoolModel(backbone, num_classes)


class FakePlugin:
    """Registers the fakes above; loaded with ``registry.register_plugin`` (the loader's explicit path)."""

    @hookimpl
    def vertebra_register_backbones(self, register):
        register("pyramid", pyramid)
        register("flat", flat)
        register("picky", picky)

    @hookimpl
    def vertebra_register_heads(self, register):
        register("dense", dense)
        register("pool", pool)
