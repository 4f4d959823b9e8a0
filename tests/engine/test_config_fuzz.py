"""Fuzz: a training config with random values of random types is a TrainConfig or a VertebraError,
never a raw exception (issue 17, fuzz test, training-config part).

Each example takes a valid tiny config and sets, deletes or adds keys anywhere in it (run settings,
data, optimizer, schedule, the model section and its backbone), then runs what ``vertebra train``
runs before any data exists: the YAML file reader with ``--set`` overrides, ``parse_config`` and
``check_config`` (which builds the model on the meta device).  Derandomized, so CI is repeatable.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vertebra.engine import checkpoint as ckpt
from vertebra.engine.config import TrainConfig, load_train_config, parse_config
from vertebra.engine.optim import build_optimizer, build_scheduler
from vertebra.engine.run import check_config
from vertebra.engine.runtime import resolve_device, seed_everything
from vertebra.errors import VertebraError

from engine_helpers import tiny

BASES = [tiny("semantic"), tiny("detection"), tiny("classification")]

PATHS = (
    "task", "epochs", "batch_size", "eval_batch_size", "seed", "device", "threads", "amp", "channels_last",
    "clip_grad_norm", "ema", "bn_momentum", "eval_every", "log_every", "init_weights", "out",
    "max_steps_per_epoch", "optimizer", "schedule", "data", "model",
    "data.format", "data.root", "data.size", "data.num_workers", "data.num_train", "data.num_val",
    "data.image_size", "data.categories", "data.train_images", "data.shapes_seed",
    "optimizer.name", "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "optimizer.nesterov",
    "optimizer.betas", "optimizer.alpha", "optimizer.eps", "optimizer.no_weight_decay_norm",
    "schedule.name", "schedule.warmup_epochs", "schedule.warmup_factor", "schedule.min_lr_ratio",
    "schedule.milestones", "schedule.gamma",
    "model.head", "model.backbone", "model.backbone.name", "model.backbone.output_stride", "model.num_classes",
    "model.inter_channels", "model.min_size", "model.fpn_channels", "model.weights",
    "unknown_key", "optimizer.momentun", "data.sise", "model.backbone.bogus",
)

PLAUSIBLE = st.sampled_from([
    0, 1, -1, 2, 3, 7, 16, 32, 1000, 2**31, 2**63, -(2**63), 0.0, -0.0, 0.5, 1.5, -1e-9, 1e300,
    "", "sgd", "adamw", "cosine", "step", "cpu", "cuda", "auto", "bf16", "fp16", "off", "shapes", "coco",
    "semantic", "detection", "lraspp", "fasterrcnn_fpn", "classifier", "mobilenet_v3_small", "resnet_nope",
    "mobilenet_v3_small.imagenet", "1e-3", "null", "yes", [], {}, [0.9], [0.9, 0.99, 0.999], ["a", 1],
    {"name": "mobilenet_v3_small"}, {"name": 3}, {"head": "lraspp"},
])
VALUES = st.one_of(
    PLAUSIBLE, st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.one_of(st.integers(-5, 50), st.floats(), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
)


def set_path(config: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def delete_path(config: dict, path: str) -> None:
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    node.pop(last, None)


@st.composite
def configs(draw):
    config = copy.deepcopy(draw(st.sampled_from(BASES)))
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True)):
        delete_path(config, path)
    for path, value in draw(st.dictionaries(st.sampled_from(PATHS), VALUES, min_size=1, max_size=4)).items():
        set_path(config, path, value)
    return config


def outcome(call):
    """``call()``'s result, or the VertebraError it raised; any other exception fails the test."""
    try:
        return call()
    except VertebraError as error:
        assert str(error), "a VertebraError needs a message"
        return error


def usable(config: TrainConfig) -> None:
    """What a run does with an accepted config before any data exists: optimizer, schedule, seeds, device.

    An accepted value these refuse with a raw ValueError (``lr=nan``, ``betas=[2, 3]``, a seed torch
    cannot take) is a config check that is missing, so it fails the test like a raw exception.
    """
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config.optimizer)
    scheduler = build_scheduler(optimizer, config.schedule, epochs=min(config.epochs, 1000), steps_per_epoch=2)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    rng = ckpt.capture_rng()
    try:
        seed_everything(config.seed)
    finally:
        ckpt.restore_rng(rng)
    outcome(lambda: resolve_device(config.device))


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(config=configs())
def test_random_configs_are_checked_or_refused_with_a_vertebra_error(config):
    parsed = outcome(lambda: parse_config(config))
    checked = outcome(lambda: check_config(config))
    if isinstance(checked, TrainConfig):
        assert isinstance(parsed, TrainConfig)
        for name in ("epochs", "batch_size", "eval_every", "log_every"):
            assert getattr(checked, name) >= 1
        assert math.isfinite(checked.optimizer.lr) and checked.optimizer.lr > 0
        outcome(lambda: usable(checked))


@FUZZ
@given(config=configs(), overrides=st.lists(
    st.builds(lambda path, text: f"{path}={text}", st.sampled_from(PATHS),
              st.one_of(st.text(max_size=12), st.sampled_from(["", "null", "[1, 2", "{a: 1}", "!!python/object:os.system", "1e400", "-5", ".nan"]))),
    max_size=3))
def test_config_files_with_random_overrides(tmp_path_factory, config, overrides):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = outcome(lambda: load_train_config(path, overrides))
    if isinstance(loaded, TrainConfig):
        checked = outcome(lambda: check_config(loaded))
        if isinstance(checked, TrainConfig):
            outcome(lambda: usable(checked))


BATTERY = [None, True, 0, -1, -5, 2**70, 0.0, -0.5, 1.5, float("nan"), float("inf"), "", "x", "3", [], ["a"],
           [2.0, 3.0], {}, {"a": 1}]
RUN_PATHS = [path for path in PATHS if not path.startswith("model")]


@pytest.mark.parametrize("path", RUN_PATHS)
def test_every_run_setting_with_every_kind_of_bad_value(path):
    """Each non-model key with each value of the battery: parsed and usable, or a VertebraError."""
    optimizers = ("sgd", "adamw", "rmsprop") if path.startswith("optimizer.") else ("sgd",)
    for name in optimizers:                 # each optimizer checks its own options
        for value in BATTERY:
            config = copy.deepcopy(BASES[0])
            config["optimizer"]["name"] = name
            set_path(config, path, value)
            parsed = outcome(lambda: parse_config(config))
            if isinstance(parsed, TrainConfig):
                outcome(lambda: usable(parsed))


@pytest.mark.parametrize("raw", [None, [], "epochs: 3", 3, [{"epochs": 1}]])
def test_a_config_that_is_not_a_mapping(raw):
    assert isinstance(outcome(lambda: parse_config(raw)), VertebraError)
