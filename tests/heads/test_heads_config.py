"""``model.config`` rebuilds every head, YAML included; the shipped configs in ``configs/`` build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from heads_helpers import HEADS, small_kwargs
from vertebra import registry

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _assert_same_architecture(model, rebuilt):
    assert type(rebuilt) is type(model)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)  # same names, same shapes


@pytest.mark.parametrize("head", HEADS)
def test_config_round_trips_through_yaml(head, tmp_path):
    model = registry.build(head, backbone={"name": "mobilenet_v3_small", "drop_path_rate": 0.1},
                           **small_kwargs(head))
    assert model.config["head"] == head
    assert model.config["backbone"] == {"name": "mobilenet_v3_small", "drop_path_rate": 0.1}
    _assert_same_architecture(model, registry.build_from_config(model.config))
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(model.config))
    _assert_same_architecture(model, registry.build_from_config(path))


def test_issue_example_backbone_options_pass_through():
    config = {"head": "deeplabv3", "backbone": {"name": "efficientnet_v2_s", "output_stride": 8,
                                                 "drop_path_rate": 0.1}, "num_classes": 21}
    with torch.device("meta"):  # shapes and wiring only; nothing allocated
        model = registry.build("deeplabv3", backbone=config["backbone"], num_classes=21, output_stride=8)
        rebuilt = registry.build_from_config(model.config)
    for built in (model, rebuilt):
        assert built.backbone.feature_info.strides() == [2, 4, 8, 8, 8]
        assert built.classifier[-1].out_channels == 21
    assert rebuilt.config == model.config


def test_configs_cover_every_head_on_two_families():
    families: dict[str, set[str]] = {}
    for path in CONFIGS:
        config = yaml.safe_load(path.read_text())
        backbone = config["backbone"] if isinstance(config["backbone"], str) else config["backbone"]["name"]
        with torch.device("meta"):
            family = registry.build_backbone(backbone).meta.family
        families.setdefault(config["head"], set()).add(family)
    for head in HEADS:
        assert len(families.get(head, ())) >= 2, f"configs/ has {head} on {families.get(head)}"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_builds(path):
    config = yaml.safe_load(path.read_text())
    with torch.device("meta"):  # every check (keys, values, requirements) runs; no weights allocated
        model = registry.build_from_config(path)
    assert model.config["head"] == config["head"]
    for key, value in config.items():
        if key != "backbone":
            assert model.config[key] == value


# Every head that takes a backbone output stride other than the one it would pick, at that stride.
EXPLICIT_OUTPUT_STRIDE = {"deeplabv3": 8, "lraspp": 8, "deeplabv3plus": 8, "fcn": 8, "pspnet": 8, "pan": 32,
                          "upernet": 16, "unetplusplus": 16, "manet": 16, "linknet": 16, "segformer": 16,
                          "retinanet_fpn": 16, "fcos_fpn": 16, "fasterrcnn_fpn": 16}


@pytest.mark.parametrize("head, stride", sorted(EXPLICIT_OUTPUT_STRIDE.items()))
def test_backbone_output_stride_is_honoured_and_round_trips(head, stride):
    with torch.device("meta"):  # wiring and shapes only; load_state_dict still checks names and shapes
        kwargs = {k: v for k, v in small_kwargs(head).items() if k != "decoder_channels"}  # one per scale
        model = registry.build(head, backbone={"name": "mobilenet_v3_small", "output_stride": stride}, **kwargs)
        rebuilt = registry.build_from_config(model.config)
    backbone = next(m for m in model.modules() if hasattr(m, "all_levels"))
    assert backbone.feature_info[-1].stride == stride
    assert model.config["backbone"] == {"name": "mobilenet_v3_small", "output_stride": stride}
    _assert_same_architecture(model, rebuilt)
