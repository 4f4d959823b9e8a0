"""``trainable_layers`` and ``frozen_bn``: torchvision's fine-tuning recipe on any backbone."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection.backbone_utils import _mobilenet_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from vertebra import registry
from vertebra.errors import ConfigError
from vertebra.features import FeatureInfo, FeatureSpec
from vertebra.heads.detection import fasterrcnn_fpn


def _frozen(module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not p.requires_grad}


def test_torchvision_preset_freezes_like_torchvision():
    reference = mobilenet_v3_large()
    for trainable in range(7):
        for parameter in reference.parameters():
            parameter.requires_grad_(True)
        body = _mobilenet_extractor(reference, True, trainable)
        expected = {f"features.{name}" for name in _frozen(body.body)}
        model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_large", preset="torchvision",
                               trainable_layers=trainable)
        assert _frozen(model.backbone.body) == expected, trainable
    assert expected == set()  # trainable_layers=6: everything trains


@pytest.mark.parametrize("trainable", [0, 2, 5])
def test_default_preset_freezes_whole_stages(trainable):
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small", trainable_layers=trainable)
    reference = registry.build_backbone("mobilenet_v3_small").freeze(stages=5 - trainable)
    assert _frozen(model.backbone.body) == _frozen(reference)
    assert not _frozen(model.backbone.fpn) and not _frozen(model.rpn) and not _frozen(model.roi_heads)
    if trainable == 0:
        assert _frozen(model.backbone.body) == {n for n, _ in model.backbone.body.named_parameters()}


def test_none_trains_everything_and_frozen_bn_keeps_statistics():
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small")
    assert not _frozen(model)
    backbone = registry.build_backbone("mobilenet_v3_small")
    for module in backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
    state = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    frozen = fasterrcnn_fpn(backbone, frozen_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.backbone.body.modules())
    norms = [m for m in frozen.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)  # default preset keeps the family's eps
    after = frozen.backbone.body.state_dict()
    assert set(after) == set(state)
    for key, value in state.items():
        assert torch.equal(after[key], value), key


class _FeaturesOnly(torch.nn.Module):
    """A third-party style backbone: honours the feature contract, has no ``features``/``all_levels``."""

    feature_info = FeatureInfo([FeatureSpec("a", 8, 8), FeatureSpec("b", 8, 16), FeatureSpec("c", 8, 32)])

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=s, padding=1)
                                         for i, s in enumerate((8, 2, 2)))

    def forward(self, x):
        out = OrderedDict()
        for name, conv in zip("abc", self.convs):
            x = conv(x)
            out[name] = x
        return out


def test_contract_only_backbones_work_but_cannot_be_partly_frozen():
    model = fasterrcnn_fpn(_FeaturesOnly(), num_classes=3, min_size=64, max_size=64).eval()
    with torch.no_grad():
        (detections,) = model([torch.rand(3, 64, 64)])
    assert detections["boxes"].shape[1] == 4
    with pytest.raises(ConfigError, match="trainable_layers=None"):
        fasterrcnn_fpn(_FeaturesOnly(), trainable_layers=1)
