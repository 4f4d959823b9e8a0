"""Config round trips: model.config -> build_from_config (dict, YAML, JSON) rebuilds the same architecture."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from vertebra import registry
from vertebra.errors import ConfigError


def _same_architecture(a, b):
    b.load_state_dict(a.state_dict(), strict=True)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


def test_model_config_round_trips_through_a_dict(fake):
    model = registry.build("dense", backbone={"name": "pyramid", "width": 8}, num_classes=7, output_stride=8)
    again = registry.build_from_config(model.config)
    _same_architecture(model, again)
    assert again.config == model.config
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(again.eval()(x)["out"], model.eval()(x)["out"])


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_model_config_round_trips_through_files(fake, tmp_path, suffix):
    model = registry.build("pool", backbone={"name": "fake:pyramid", "out_indices": [2, 4]}, num_classes=3)
    path = tmp_path / f"model{suffix}"
    path.write_text(json.dumps(model.config) if suffix == ".json" else yaml.safe_dump(model.config))
    again = registry.build_from_config(path)
    _same_architecture(model, again)
    assert again.config == model.config
    assert registry.build_from_config(str(path)).config == model.config


def test_backbone_config_round_trips(fake):
    backbone = registry.build_backbone("pyramid", output_stride=16, width=2)
    assert backbone.config == {"name": "pyramid", "output_stride": 16, "width": 2}
    _same_architecture(backbone, registry.build_from_config(backbone.config))


def test_weights_key_in_a_config(fake, tmp_path):
    model = registry.build("pool", backbone="pyramid")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = registry.build_from_config({**model.config, "weights": str(tmp_path / "w.pth")})
    torch.testing.assert_close(again.fc.weight, model.fc.weight)
    assert "weights" not in again.config


def test_nested_errors_carry_the_dotted_path(fake):
    with pytest.raises(ConfigError) as info:
        registry.build_from_config({"head": "dense", "backbone": {"name": "pyramid", "levls": 3}})
    assert info.value.path == "backbone.levls"
    with pytest.raises(ConfigError) as info:
        registry.build_from_config({"head": "pool", "backbone": {"name": "pyramid", "output_stride": 7}},
                                   path="model")
    assert info.value.path == "model.backbone.output_stride"
    assert str(info.value).startswith("model.backbone.output_stride: output_stride must be one of")
    with pytest.raises(ConfigError) as info:
        registry.build_from_config({"head": "pool", "backbone": "pyramid", "num_classse": 3}, path="model")
    assert info.value.path == "model.num_classse"
    with pytest.raises(ConfigError) as info:
        registry.build_from_config({"head": 5, "backbone": "pyramid"})
    assert info.value.path == "head"


def test_config_shape_errors(fake, tmp_path):
    with pytest.raises(ConfigError, match="needs 'head'.*or 'name'"):
        registry.build_from_config({"backbone": "pyramid"})
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        registry.build_from_config([1, 2])
    bad_suffix = tmp_path / "model.toml"
    bad_suffix.write_text("x = 1")
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.json"):
        registry.build_from_config(bad_suffix)
    with pytest.raises(ConfigError, match="does not exist"):
        registry.build_from_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("head: pool\nbackbone: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml' is not valid YAML.*line"):
        registry.build_from_config(broken)
    broken_json = tmp_path / "broken.json"
    broken_json.write_text("{'head': 1}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        registry.build_from_config(broken_json)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping, got list"):
        registry.build_from_config(listed)


def test_yaml_is_loaded_safely(fake, tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("head: !!python/object/apply:os.system ['echo owned']\nbackbone: pyramid\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        registry.build_from_config(evil)
