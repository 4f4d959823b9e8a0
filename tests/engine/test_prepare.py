"""prepare_run: the whole config, model section included, is checked before any data is made."""

from __future__ import annotations

import pytest

import vertebra.data
from vertebra.engine import evaluate, train
from vertebra.engine.run import check_config
from vertebra.engine.tasks import TASKS, task_spec
from vertebra.errors import ConfigError

from engine_helpers import tiny


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the shapes generator runs."""
    def refuse(*args, **kwargs):
        raise AssertionError("the shapes data set was generated before the config was checked")

    monkeypatch.setattr(vertebra.data, "generate_shapes", refuse)


@pytest.mark.parametrize("where, key, value, path", [
    ("backbone", "outptu_stride", 16, "model.backbone.outptu_stride"),   # a backbone option typo
    ("head", "inter_channel", 16, "model.inter_channel"),                # a head option typo
])
def test_a_bad_model_key_fails_before_the_data_is_generated(tmp_path, no_data, where, key, value, path):
    config = tiny("semantic")
    (config["model"]["backbone"] if where == "backbone" else config["model"])[key] = value
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as info:
        train(config, out_dir=out, progress=False)
    assert info.value.path == path and "did you mean" in str(info.value)
    assert not (out / "data").exists()


def test_evaluate_checks_the_model_before_the_checkpoint_and_the_data(tmp_path, no_data):
    config = tiny("semantic")
    config["model"]["backbone"]["name"] = "mobilenet_v3_smal"
    with pytest.raises(Exception, match="mobilenet_v3_small"):      # an unknown name, with the suggestion
        evaluate(config, tmp_path / "missing.pth", out_dir=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_an_unknown_task_is_one_error_listing_the_table(tmp_path, no_data):
    config = {**tiny("semantic"), "task": "panoptic"}
    with pytest.raises(ConfigError) as info:
        train(config, out_dir=tmp_path, progress=False)
    assert info.value.path == "task"
    assert all(repr(name) in str(info.value) for name in TASKS)


def test_the_table_has_one_row_per_task():
    assert sorted(TASKS) == ["classification", "detection", "instance", "semantic"]
    for name, spec in TASKS.items():
        assert task_spec(name) is spec and spec.name == name == spec.adapter.name


def test_num_classes_left_to_the_data_does_not_block_the_check():
    config = tiny("detection")
    assert "num_classes" not in config["model"]
    assert check_config(config).model == config["model"]      # the placeholder is not written back


def test_a_factory_that_cannot_run_on_meta_is_left_to_the_real_build(monkeypatch):
    from vertebra import registry

    def meta_unfriendly(*args, **kwargs):
        raise NotImplementedError("cannot read values of meta tensors")

    monkeypatch.setattr(registry, "build_from_config", meta_unfriendly)
    check_config(tiny("semantic"))
