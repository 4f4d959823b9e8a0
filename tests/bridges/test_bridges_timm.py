"""timm:<model>: timm's feature models as vertebra backbones, through the conformance kit and the heads."""

from __future__ import annotations

import re
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from vertebra import registry
from vertebra.bridges.timm import INSTALL_HINT, resolve
from vertebra.errors import ConfigError, IncompatibleError, MissingExtraError, UnknownNameError
from vertebra.plugins.testing import check_backbone

HEADS = ("classifier", "lraspp", "deeplabv3", "fasterrcnn_fpn", "unet")
SMALL = {"sizes": ((33, 47),), "output_strides": (8, 16), "heads": HEADS}


@pytest.mark.parametrize("model, levels", [
    ("resnet18", [("C1", 64, 2), ("C2", 64, 4), ("C3", 128, 8), ("C4", 256, 16), ("C5", 512, 32)]),
    ("convnext_atto", [("C2", 40, 4), ("C3", 80, 8), ("C4", 160, 16), ("C5", 320, 32)]),
    ("mobilenetv4_conv_small", [("C1", 32, 2), ("C2", 32, 4), ("C3", 64, 8), ("C4", 96, 16), ("C5", 960, 32)]),
])
def test_timm_models_pass_the_kit_under_the_five_heads_in_train_and_eval(model, levels):
    name = f"timm:{model}"
    checks = ["contract", "output_stride", "out_indices", "meta", "state_dict", "freeze", "checkpointing", "heads"]
    report = check_backbone(name, checks=checks + (["export"] if model == "resnet18" else []), **SMALL)
    assert report.passed == checks + (["export"] if model == "resnet18" else [])
    assert report.refused == []  # every output stride, every head: nothing refused
    backbone = registry.build_backbone(name, output_stride=16)
    assert [(s.name, s.channels, s.stride) for s in backbone.all_levels] == \
        [(n, c, min(s, 16)) for n, c, s in levels]


def test_a_timm_checkpoint_loads_strictly_and_matches_timm(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("convnext_atto", pretrained=False)  # stages.0 ... in the file
    file = tmp_path / "convnext_atto.safetensors"
    save_file(reference.state_dict(), str(file))
    backbone = registry.build_backbone("timm:convnext_atto", weights=str(file)).eval()
    timm_features = timm.create_model("convnext_atto", features_only=True, pretrained=True,
                                      pretrained_cfg_overlay={"file": str(file)}).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = backbone(x), timm_features(x)
    for mine, timms in zip(ours.values(), theirs):
        torch.testing.assert_close(mine, timms)
    from vertebra.weights import load_weights

    report = load_weights(backbone, str(file))
    assert sorted(report.dropped) == ["head.fc.bias", "head.fc.weight", "head.norm.bias", "head.norm.weight"]


def test_output_stride_is_refused_with_the_reason_where_timm_cannot_dilate():
    with pytest.raises(IncompatibleError, match=r"vit_tiny_patch16_224.*output_stride=16.*use output_stride=32"):
        registry.build("lraspp", backbone="timm:vit_tiny_patch16_224", num_classes=2)


def test_unknown_models_and_a_missing_timm_are_typed_errors(monkeypatch):
    with pytest.raises(UnknownNameError, match="resnet18"):
        registry.build_backbone("timm:resnet81")
    with pytest.raises(ConfigError, match="output_stride must be one of") as caught:
        registry.build_backbone("timm:resnet18", output_stride=12)
    assert caught.value.path == "output_stride"
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(MissingExtraError, match=re.escape(f"run: {INSTALL_HINT}")) as caught:
        resolve("resnet18")
    assert 'pip install "vertebra[timm]"' in str(caught.value)
