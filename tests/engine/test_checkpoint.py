"""Checkpoint pieces: RNG round trip, atomic writes under a crash, refusing other architectures."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from vertebra.engine import checkpoint as ckpt
from vertebra.errors import CheckpointError

from engine_helpers import training_state


def draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    state = training_state()
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    ckpt.save_training_checkpoint(tmp_path / "c.pth", {**state, "rng": [ckpt.capture_rng()]})
    expected = draws()
    assert draws() != expected
    ckpt.restore_rng(ckpt.load_training_checkpoint(tmp_path / "c.pth")["rng"][0])
    assert draws() == expected


def test_interrupted_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    ckpt.save_training_checkpoint(path, training_state(epoch=1, model={"w": torch.ones(3)}))
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(10)                       # a half-written file ...
        raise KeyboardInterrupt("killed mid-save")  # ... and the process dies

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_training_checkpoint(path, training_state(epoch=2, model={"w": torch.zeros(3)}))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ckpt.load_training_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]      # no temporary file left behind


def test_a_plain_weights_file_is_not_a_training_checkpoint(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="not a vertebra training checkpoint"):
        ckpt.load_training_checkpoint(tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_training_checkpoint(tmp_path / "missing.pth")


class Tiny(nn.Module):
    def __init__(self, width: int, config: dict | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        if config is not None:
            self.config = config


def test_other_architecture_refused_by_config_difference():
    theirs = Tiny(4, {"head": "lraspp", "backbone": {"name": "mobilenet_v3_small"}, "num_classes": 4})
    ours = Tiny(4, {"head": "lraspp", "backbone": {"name": "mobilenet_v3_large"}, "num_classes": 4})
    state = {"model": theirs.state_dict(), "model_config": theirs.config}
    with pytest.raises(CheckpointError, match="another architecture") as info:
        ckpt.check_architecture(state, ours, "last.pth")
    assert "model.backbone.name was 'mobilenet_v3_small', now 'mobilenet_v3_large'" in str(info.value)


def test_other_architecture_refused_by_key_and_shape_difference():
    state = {"model": Tiny(4).state_dict(), "model_config": None}
    with pytest.raises(CheckpointError, match=r"2 of another shape: conv.bias \(4,\) vs \(8,\), conv.weight \(4, 3, 3, 3\) vs \(8, 3, 3, 3\)"):
        ckpt.check_architecture(state, Tiny(8), "last.pth")
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(CheckpointError, match="2 missing: 0.bias, 0.weight; 2 unexpected: conv.bias, conv.weight"):
        ckpt.check_architecture(state, other, "last.pth")
    ckpt.check_architecture(state, Tiny(4), "last.pth")               # the same architecture passes
