"""torchvision:<model>: torchvision classifiers cut at their levels, dilated where convolutions stride."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from vertebra import registry
from vertebra.errors import ConfigError, IncompatibleError, UnknownNameError
from vertebra.plugins.testing import check_backbone
from vertebra.weights import load_weights

HEADS = ("classifier", "lraspp", "deeplabv3", "fasterrcnn_fpn", "unet")
CHECKS = ["contract", "output_stride", "out_indices", "meta", "state_dict", "freeze", "checkpointing", "heads"]


@pytest.mark.parametrize("model, levels", [
    ("resnet18", [("C1", 64, 2), ("C2", 64, 4), ("C3", 128, 8), ("C4", 256, 16), ("C5", 512, 32)]),
    ("regnet_x_400mf", [("C1", 32, 2), ("C2", 32, 4), ("C3", 64, 8), ("C4", 160, 16), ("C5", 400, 32)]),
])
def test_torchvision_models_pass_the_kit_under_the_five_heads_in_train_and_eval(model, levels):
    report = check_backbone(f"torchvision:{model}", checks=CHECKS, sizes=((33, 47),), output_strides=(8, 16),
                            heads=HEADS)
    assert report.passed == CHECKS
    assert report.refused == []
    backbone = registry.build_backbone(f"torchvision:{model}", output_stride=8)
    assert [(s.name, s.channels, s.stride) for s in backbone.all_levels] == \
        [(n, c, min(s, 8)) for n, c, s in levels]


def test_a_torchvision_checkpoint_loads_strictly_and_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    file = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), file)
    backbone = registry.build_backbone("torchvision:resnet18").eval()
    report = load_weights(backbone, str(file))
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    taps = create_feature_extractor(reference, {"relu": "C1", "layer1": "C2", "layer2": "C3", "layer3": "C4",
                                                "layer4": "C5"})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = backbone(x), taps(x)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name])


@pytest.mark.parametrize("model, output_stride, reason", [
    ("swin_t", 16, "strided by a layer that is not a convolution"),    # patch merging
    ("googlenet", 8, "maxpool3 is a strided MaxPool2d"),
    ("vit_b_16", 32, "fixed square size and return tokens"),
    ("squeezenet1_0", 32, "unpadded convolutions or pools"),
])
def test_what_cannot_be_a_backbone_or_dilated_is_refused_with_the_reason(model, output_stride, reason):
    with pytest.raises(IncompatibleError, match=reason):
        registry.build_backbone(f"torchvision:{model}", output_stride=output_stride)


def test_names_are_resolved_and_listed_from_torchvision():
    assert "torchvision:regnet_x_400mf" in registry.list_backbones("torchvision:regnet_x_*")
    assert "torchvision:resnet18" not in registry.list_backbones()  # a namespace is not enumerated
    described = registry.describe("torchvision:regnet_x_400mf")
    assert (described.kind, described.plugin, described.summary) == \
        ("backbone", "vertebra", "torchvision model 'regnet_x_400mf' as a vertebra backbone.")
    assert [s.stride for s in described.levels] == [2, 4, 8, 16, 32]
    with pytest.raises(UnknownNameError, match="resnet18"):
        registry.build_backbone("torchvision:resnet81")
    with pytest.raises(ConfigError, match="output_stride must be one of"):
        registry.build_backbone("torchvision:resnet18", output_stride=4)


def test_levels_are_stage_ends_the_same_as_vertebras_own_family():
    with torch.device("meta"):
        bridged = registry.build_backbone("torchvision:efficientnet_b0")
        own = registry.build_backbone("efficientnet_b0")  # the same architecture, vertebra's table
    assert [(s.name, s.channels, s.stride) for s in bridged.all_levels] == \
        [(s.name, s.channels, s.stride) for s in own.all_levels]
