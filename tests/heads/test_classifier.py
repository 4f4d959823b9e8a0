"""The ``classifier`` head on every family: logits, family defaults, weights mapping, bad arguments."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from vertebra import registry
from vertebra.errors import ConfigError
from vertebra.features import FeatureInfo, FeatureSpec
from vertebra.heads.classifier import classifier
from vertebra.weights import load_weights

SMALLEST = ["efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_small"]


@pytest.mark.parametrize("name", SMALLEST)
def test_logits_shape_training_step_and_config_round_trip(name):
    torch.manual_seed(0)
    model = registry.build("classifier", backbone=name, num_classes=7)
    assert model.config == {"head": "classifier", "backbone": {"name": name}, "num_classes": 7}
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([1, 5])).backward()
    assert model.head.classifier[-1].weight.grad is not None
    assert model.backbone.features[0][0].weight.grad is not None
    rebuilt = registry.build_from_config(model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_family_classifier_shapes_and_dropout_defaults():
    with torch.device("meta"):
        b7 = registry.build("classifier", backbone="efficientnet_b7")
        small = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=10)
        custom = registry.build("classifier", backbone="efficientnet_b0", dropout=0.0)
        tail = registry.build("classifier", backbone={"name": "mobilenet_v3_large", "reduced_tail": True})
    assert [type(m) for m in b7.head.classifier] == [nn.Dropout, nn.Linear]
    assert b7.head.classifier[0].p == 0.5 and b7.head.classifier[1].in_features == 2560
    assert [type(m) for m in small.head.classifier] == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    assert (small.head.classifier[0].in_features, small.head.classifier[0].out_features) == (576, 1024)
    assert small.head.classifier[2].p == 0.2 and small.head.classifier[3].out_features == 10
    assert custom.head.classifier[0].p == 0.0
    assert (tail.head.classifier[0].in_features, tail.head.classifier[0].out_features) == (480, 640)


def test_max_pool_and_deepest_returned_level():
    torch.manual_seed(0)
    backbone = registry.build_backbone("mobilenet_v3_small", out_indices=[1, 3]).eval()
    model = classifier(backbone, num_classes=3, pool="max").eval()
    assert model.level == "C4" and model.head.classifier[0].in_features == 48
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.head.classifier(backbone(x)["C4"].amax(dim=(2, 3)))
        torch.testing.assert_close(model(x), expected)


class _TinyBackbone(nn.Module):
    """A third-party backbone: only the feature contract, no ``meta``."""

    feature_info = FeatureInfo([FeatureSpec("P2", 8, 2)])

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return OrderedDict(P2=self.conv(x))


def test_works_on_any_backbone_with_the_feature_contract():
    model = classifier(_TinyBackbone(), num_classes=4)
    assert [type(m) for m in model.head.classifier] == [nn.Dropout, nn.Linear]
    assert model.head.classifier[0].p == 0.2
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_torchvision_checkpoint_loads_into_classifier_and_backbone():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small().eval()
    model = registry.build("classifier", backbone="mobilenet_v3_small").eval()
    report = load_weights(model, reference.state_dict())
    assert not report.dropped and report.mapped
    backbone_report = load_weights(model.backbone, reference.state_dict())
    assert sorted(backbone_report.dropped) == ["classifier.0.bias", "classifier.0.weight",
                                               "classifier.3.bias", "classifier.3.weight"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes: must be a positive integer"),
    ({"num_classes": "10"}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
    ({"pool": "mean"}, "pool: must be one of 'avg', 'max'"),
    ({"dropout": 1.0}, r"dropout: must be a number in \[0, 1\)"),
    ({"dropout": -0.1}, "dropout"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        with torch.device("meta"):
            registry.build("classifier", backbone="mobilenet_v3_small", **kwargs)


def test_unknown_argument_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="num_clases.*num_classes"):
        with torch.device("meta"):
            registry.build("classifier", backbone="mobilenet_v3_small", num_clases=3)
