"""Optimizers and learning-rate schedules built from the config."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vertebra.engine.config import OptimizerConfig, ScheduleConfig
from vertebra.engine.optim import TF_RMSPROP_EPS, build_optimizer, build_scheduler, lr_factor


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW),
                                       ("rmsprop", torch.optim.RMSprop)])
def test_optimizer_kinds(name, cls):
    optimizer = build_optimizer(small_model(), OptimizerConfig(name=name, lr=0.1))
    assert isinstance(optimizer, cls) and optimizer.param_groups[0]["lr"] == 0.1


def test_rmsprop_defaults_to_tf_style_epsilon():
    optimizer = build_optimizer(small_model(), OptimizerConfig(name="rmsprop"))
    assert optimizer.defaults["eps"] == TF_RMSPROP_EPS == pytest.approx(math.sqrt(1e-3), rel=1e-3)
    assert optimizer.defaults["alpha"] == 0.9
    assert build_optimizer(small_model(), OptimizerConfig(name="rmsprop", eps=1e-8)).defaults["eps"] == 1e-8


def test_no_weight_decay_on_norm_and_bias():
    model = small_model()
    decay, no_decay = build_optimizer(model, OptimizerConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay) == {id(model[0].weight), id(model[3].weight)}
    assert ids(no_decay) == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    single = build_optimizer(model, OptimizerConfig(weight_decay=0.1, no_weight_decay_norm=False)).param_groups
    assert len(single) == 1


def test_frozen_parameters_are_left_out():
    model = small_model()
    model[0].weight.requires_grad_(False)
    params = {id(p) for g in build_optimizer(model, OptimizerConfig()).param_groups for p in g["params"]}
    assert id(model[0].weight) not in params


def test_warmup_then_cosine():
    config = ScheduleConfig(name="cosine", warmup_epochs=1, warmup_factor=0.01, min_lr_ratio=0.1)
    factors = [lr_factor(step, total_steps=40, steps_per_epoch=10, config=config) for step in range(41)]
    assert factors[0] == pytest.approx(0.01)
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))       # warmup rises
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))       # cosine falls
    assert factors[25] == pytest.approx(0.1 + 0.9 * 0.5)                 # half way through the cosine
    assert factors[40] == pytest.approx(0.1)


def test_step_schedule_and_constant():
    config = ScheduleConfig(name="step", milestones=[2, 3], gamma=0.5)
    assert [lr_factor(s, 40, 10, config) for s in (0, 19, 20, 29, 30)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lr_factor(33, 40, 10, ScheduleConfig(name="constant")) == 1.0


def test_scheduler_steps_per_optimizer_step():
    model = small_model()
    optimizer = build_optimizer(model, OptimizerConfig(lr=1.0))
    scheduler = build_scheduler(optimizer, ScheduleConfig(warmup_epochs=0), epochs=2, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
