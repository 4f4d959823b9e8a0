"""The training config: parsing, --set overrides, and refusals that name the key and the valid ones."""

from __future__ import annotations

import pytest
import yaml

from vertebra.engine.config import (TrainConfig, apply_overrides, config_to_dict, load_train_config, parse_config,
                                    parse_override)
from vertebra.errors import ConfigError

MINIMAL = {"model": {"head": "lraspp", "backbone": {"name": "mobilenet_v3_small"}}, "task": "semantic"}


def write(tmp_path, data, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_and_round_trip():
    config = parse_config(MINIMAL)
    assert isinstance(config, TrainConfig)
    assert config.optimizer.name == "sgd" and config.schedule.name == "cosine" and config.amp == "off"
    assert config.data.format == "shapes" and config.ema is None and config.epochs == 10
    assert parse_config(config_to_dict(config)) == config


def test_load_yaml_with_overrides(tmp_path):
    path = write(tmp_path, {**MINIMAL, "optimizer": {"name": "adamw", "lr": 0.001}, "epochs": 3})
    config = load_train_config(path, ["optimizer.lr=1e-2", "epochs=5", "ema=0.999", "data.categories=[circle, square]",
                                "model.backbone.output_stride=16", "amp=bf16"])
    assert config.optimizer.lr == 0.01 and isinstance(config.optimizer.lr, float)
    assert config.optimizer.name == "adamw"          # untouched keys survive
    assert config.epochs == 5 and config.ema == 0.999 and config.amp == "bf16"
    assert config.data.categories == ["circle", "square"]
    assert config.model["backbone"] == {"name": "mobilenet_v3_small", "output_stride": 16}


def test_override_creates_sections_and_null_turns_off():
    raw = apply_overrides({"model": {"head": "x"}, "ema": 0.9}, ["ema=null", "schedule.warmup_epochs=1"])
    assert raw["ema"] is None and raw["schedule"] == {"warmup_epochs": 1}
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


@pytest.mark.parametrize("text", ["lr0.1", "=3", "optimizer..lr=1", "optimizer.lr=[unclosed"])
def test_bad_override_syntax(text):
    with pytest.raises(ConfigError, match="override"):
        parse_override(text)


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'epochs' is a value") as info:
        apply_overrides({"epochs": 3}, ["epochs.count=2"])
    assert info.value.path == "epochs"


def test_unknown_top_level_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "epoch": 3})
    message = str(info.value)
    assert "'epoch'" in message and "did you mean 'epochs'" in message and "batch_size" in message


def test_unknown_nested_key_has_dotted_path_and_suggestion(tmp_path):
    path = write(tmp_path, {**MINIMAL, "optimizer": {"momentun": 0.9}})
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert info.value.path == "optimizer"
    assert "did you mean 'momentum'" in str(info.value) and "weight_decay" in str(info.value)
    with pytest.raises(ConfigError) as info:          # unknown keys from --set are refused the same way
        load_train_config(write(tmp_path, MINIMAL, "clean.yaml"), ["data.num_trian=4"])
    assert info.value.path == "data" and "did you mean 'num_train'" in str(info.value)


@pytest.mark.parametrize("override, path, words", [
    ("epochs=three", "epochs", "integer"),
    ("epochs=0", "epochs", "at least 1"),
    ("optimizer.lr=-1", "optimizer.lr", "positive"),
    ("optimizer.name=adam", "optimizer.name", "'sgd', 'adamw', 'rmsprop'"),
    ("amp=fp8", "amp", "'bf16'"),
    ("channels_last=maybe", "channels_last", "true or false"),
    ("ema=1.5", "ema", "between 0 and 1"),
    ("clip_grad_norm=0", "clip_grad_norm", "positive"),
    ("bn_momentum=2", "bn_momentum", "(0, 1]"),
    ("data=3", "data", "mapping"),
])
def test_bad_values_name_the_dotted_path(tmp_path, override, path, words):
    with pytest.raises(ConfigError) as info:
        load_train_config(write(tmp_path, MINIMAL), [override])
    assert info.value.path == path
    assert words in str(info.value)


def test_yaml_off_means_amp_off(tmp_path):
    assert load_train_config(write(tmp_path, f"{yaml.safe_dump(MINIMAL)}amp: off\n")).amp == "off"


def test_model_section_needs_a_head():
    with pytest.raises(ConfigError, match="'head'") as info:
        parse_config({"model": {"backbone": "mobilenet_v3_small"}})
    assert info.value.path == "model"


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml' does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_train_config(write(tmp_path, "- a\n- b\n"))


def test_json_configs_read_like_yaml(tmp_path):
    """The file is read by the registry's reader, so JSON works as it does for model configs."""
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(MINIMAL))
    assert load_train_config(path) == parse_config(MINIMAL)
