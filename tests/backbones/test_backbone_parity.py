"""Exactness against torchvision: structure, parameter counts, MACs and logits, for every variant.

Nothing is downloaded: the torchvision model gets random weights (and random BatchNorm statistics,
so an epsilon or momentum mismatch cannot hide behind mean 0 / variance 1), its state_dict is loaded
strictly into ours through vertebra's own key map, and the outputs must match at float32 defaults.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import StochasticDepth

from vertebra import registry
from vertebra.inference import inference_folding
from vertebra.backbones._flops import count_macs
from vertebra.weights import load_weights

TORCHVISION = [name for name in registry.list_backbones() if name in torchvision.models.list_models()]
BIG = {"efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
       "efficientnet_v2_m", "efficientnet_v2_l"}


def _randomise_batchnorm(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.05)
            module.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def test_parametrization_covers_every_torchvision_family():
    assert len(TORCHVISION) == 13
    assert registry.describe("efficientnet_b0").name in TORCHVISION


@pytest.mark.parametrize("name", TORCHVISION)
def test_structure_matches_torchvision(name):
    """Same module names, types, conv geometry and BatchNorm eps/momentum, module by module (on meta)."""
    with torch.device("meta"):
        reference = torchvision.models.get_model(name)
        model = registry.build("classifier", backbone=name, num_classes=1000)
    # Stochastic depth holds no state; our MobileNetV3 blocks carry it (drop_path_rate), torchvision's don't.
    ours = {k: m for k, m in model.backbone.features.named_modules() if not isinstance(m, StochasticDepth)}
    theirs = {k: m for k, m in reference.features.named_modules() if not isinstance(m, StochasticDepth)}
    assert list(ours) == list(theirs)
    for key, module in theirs.items():
        mine = ours[key]
        # the same class (ours subclasses torchvision's Conv2dNormActivation) or our class of the same name
        assert isinstance(mine, type(module)) or type(mine).__name__ == type(module).__name__, key
        if isinstance(module, nn.Conv2d):
            geometry = ("stride", "padding", "dilation", "groups", "kernel_size", "in_channels", "out_channels")
            assert [getattr(mine, a) for a in geometry] == [getattr(module, a) for a in geometry], key
        if isinstance(module, nn.BatchNorm2d):
            assert (mine.eps, mine.momentum) == (module.eps, module.momentum), key
    assert [type(m) for m in model.head.classifier] == [type(m) for m in reference.classifier]
    assert model.head.classifier[-1].in_features == reference.classifier[-1].in_features
    assert [m.p for m in model.head.classifier if isinstance(m, nn.Dropout)] == \
        [m.p for m in reference.classifier if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("name", TORCHVISION)
def test_parameter_count_equals_torchvision(name):
    with torch.device("meta"):
        reference = torchvision.models.get_model(name)
        model = registry.build("classifier", backbone=name, num_classes=1000)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert count == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert count == model.backbone.meta.paper["torchvision_params"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_logits_equal_torchvision(name):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name).eval()
    _randomise_batchnorm(reference)
    model = registry.build("classifier", backbone=name, num_classes=1000).eval()
    report = load_weights(model, reference.state_dict())
    assert report.mapped and not report.dropped and not report.missing and not report.unexpected
    size = 32 if name in BIG else 64
    x = torch.randn(1, 3, size, size + 8)
    with torch.no_grad(), inference_folding(False):  # bit for bit: BatchNorm as torchvision runs it
        torch.testing.assert_close(model(x), reference(x))


# FLOPs (multiply-adds) against torchvision's published "_ops" and the papers, within 5%.
MACS = {  # name: (input size the figures are for, paper's multiply-adds)
    "efficientnet_b0": (224, 0.39e9),
    "efficientnet_b3": (300, 1.8e9),
    "efficientnet_v2_s": (384, 8.8e9),
    "mobilenet_v3_large": (224, 219e6),
}


@pytest.mark.parametrize("name", sorted(MACS))
def test_macs_within_5_percent_of_torchvision_and_paper(name):
    size, paper = MACS[name]
    with torch.device("meta"):
        model = registry.build("classifier", backbone=name, num_classes=1000)
    macs = count_macs(model, size, size)
    published = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"] * 1e9
    assert macs == pytest.approx(published, rel=0.05)
    assert macs == pytest.approx(paper, rel=0.05)
    assert model.backbone.meta.paper["torchvision_gmacs"] * 1e9 == pytest.approx(published)
    assert model.backbone.meta.paper["macs_g"] * 1e9 == pytest.approx(paper)


@pytest.mark.parametrize("kwargs", [{}, {"reduced_tail": True}, {"width_mult": 0.75}])
@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_mobilenet_output_stride_16_is_torchvision_dilated(name, kwargs):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, dilated=True, **kwargs).eval()
    _randomise_batchnorm(reference)
    backbone = registry.build_backbone(name, output_stride=16, **kwargs).eval()
    load_weights(backbone, reference.state_dict())
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)["C5"], reference.features(x))


@pytest.mark.parametrize("output_stride", [16, 32])
def test_torchvision_preset_taps_are_torchvisions(output_stride):
    """preset='torchvision' returns what torchvision's dense models tap: stem, first block of each stage, last conv."""
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_large(dilated=output_stride == 16).eval()
    backbone = registry.build_backbone("mobilenet_v3_large", preset="torchvision",
                                       output_stride=output_stride).eval()
    load_weights(backbone, reference.state_dict())
    features = reference.features
    stage_indices = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    assert [spec.index for spec in backbone.feature_info] == stage_indices
    assert backbone.feature_info.names() == ["C1", "C2", "C3", "C4", "C5_block", "C5"]
    x = torch.randn(1, 3, 64, 64)
    expected, y = [], x
    with torch.no_grad():
        for i, layer in enumerate(features):
            y = layer(y)
            if i in stage_indices:
                expected.append(y)
        out = backbone(x)
    for got, want in zip(out.values(), expected):
        torch.testing.assert_close(got, want)
