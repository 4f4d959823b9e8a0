"""Bad numbers are refused where they are written (issue 16, bad input): NaN, infinite, negative or
out-of-range learning rates, momenta, weight decay, warmup and workers, and every key the issue
added, each a ConfigError naming its dotted path and the valid values -- never a torch error later."""

from __future__ import annotations

import math

import pytest

from vertebra.engine import parse_config
from vertebra.errors import ConfigError

NAN, INF = math.nan, math.inf


def raw(path: str, value) -> dict:
    config: dict = {"model": {"head": "lraspp"}}
    node = config
    *sections, name = path.split(".")
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value
    return config


@pytest.mark.parametrize("path, value, words", [
    ("optimizer.lr", NAN, "finite positive"), ("optimizer.lr", -0.1, "finite positive"),
    ("optimizer.lr", INF, "finite positive"), ("optimizer.lr", 0, "finite positive"),
    ("optimizer.momentum", NAN, "[0, 1)"), ("optimizer.momentum", -0.9, "[0, 1)"), ("optimizer.momentum", 1.5, "[0, 1)"),
    ("optimizer.weight_decay", NAN, ">= 0"), ("optimizer.weight_decay", -1e-4, ">= 0"),
    ("optimizer.alpha", 2.0, "[0, 1)"), ("optimizer.betas", [0.9, NAN], "[0, 1)"), ("optimizer.eps", -1.0, ">= 0"),
    ("schedule.warmup_epochs", NAN, ">= 0"), ("schedule.warmup_epochs", -1, ">= 0"),
    ("schedule.warmup_factor", 2.0, "[0, 1]"), ("schedule.warmup_factor", NAN, "[0, 1]"),
    ("data.num_workers", -1, "0 or more"), ("data.num_workers", 1.5, "integer"),
    ("data.val_split", 0.0, "between 0 and 1"), ("data.val_split", 1.0, "between 0 and 1"),
    ("data.val_split", NAN, "between 0 and 1"), ("data.classes", ["only"], "at least 2 distinct"),
    ("finetune.frozen_stages", -1, "0 or more"), ("finetune.frozen_stages", 1.5, "integer"),
    ("finetune.backbone_lr_mult", -0.1, ">= 0"), ("finetune.backbone_lr_mult", NAN, ">= 0"),
    ("finetune.batchnorm", "fixed", "'train', 'eval', 'frozen'"), ("finetune.weights", 3, "string"),
])
def test_bad_numbers_are_refused_with_their_path_and_the_valid_values(path, value, words):
    with pytest.raises(ConfigError) as info:
        parse_config(raw(path, value))
    assert info.value.path == path and words in str(info.value)


def test_the_values_recipes_use_are_accepted():
    config = parse_config({"model": {"head": "lraspp"}, "optimizer": {"name": "rmsprop", "lr": 0.064, "momentum": 0.9,
                                                                      "alpha": 0.9, "eps": 0.0316, "weight_decay": 1e-5},
                           "schedule": {"warmup_epochs": 5, "warmup_factor": 0.01}, "data": {"num_workers": 0},
                           "finetune": {"backbone_lr_mult": 0.0}})
    assert config.optimizer.momentum == 0.9 and config.finetune.backbone_lr_mult == 0.0
