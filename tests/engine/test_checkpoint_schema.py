"""A training checkpoint is checked against one schema on every read (issue 17, finding 13).

Files that carry the format marker but lack a field, or hold one of the wrong type, used to leak
KeyError / AttributeError / TypeError from deep inside resume or eval; ``epoch=-5`` was accepted.
The files here are sealed with a valid digest, so only the schema can refuse them.
"""

from __future__ import annotations

import pytest
import torch

from vertebra.engine import checkpoint as ckpt
from vertebra.errors import CheckpointError

from engine_helpers import training_state

MISSING = object()


@pytest.mark.parametrize("field, value", [
    ("model", MISSING), ("optimizer", MISSING), ("epoch", MISSING), ("rng", MISSING), ("history", MISSING),
    ("model", {"w": "not a tensor"}), ("model", [torch.ones(1)]), ("ema", 3),
    ("optimizer", "sgd"), ("optimizer", {"state": {}}), ("optimizer", {"state": {}, "param_groups": [1]}),
    ("scheduler", None), ("scaler", "on"),
    ("epoch", -5), ("epoch", "3"), ("epoch", True), ("epoch", 1.5), ("step_in_epoch", -1), ("global_step", None),
    ("running", {"loss_sums": {}, "images": 0}), ("running", {"loss_sums": {"loss": "x"}, "images": 0, "seconds": 0}),
    ("rng", {"python": []}), ("rng", [{"python": [3, [1], None]}]),
    ("world_size", 0), ("config", []), ("model_config", "fcn"), ("history", [1, 2]),
])
def test_malformed_fields_are_refused_naming_the_field(tmp_path, field, value):
    state = training_state()
    if value is MISSING:
        del state[field]
    else:
        state[field] = value
    path = ckpt.save_training_checkpoint(tmp_path / "last.pth", state)
    with pytest.raises(CheckpointError, match=rf"last\.pth.*'{field}'"):
        ckpt.load_training_checkpoint(path)
    with pytest.raises(CheckpointError, match=f"'{field}'"):      # the path eval reads through
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize("part", ["model", "ema"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, part, bad):
    weights = {"conv.weight": torch.ones(2, 2), "conv.bias": torch.tensor([0.0, bad]),
               "bn.num_batches_tracked": torch.tensor(3)}
    path = ckpt.save_training_checkpoint(tmp_path / "last.pth", training_state(**{part: weights}))
    with pytest.raises(CheckpointError, match=rf"{part}\['conv.bias'\] holds NaN or infinite"):
        ckpt.load_training_checkpoint(path)


def test_a_complete_state_loads(tmp_path):
    path = ckpt.save_training_checkpoint(tmp_path / "last.pth", training_state(epoch=0))
    assert ckpt.load_training_checkpoint(path)["epoch"] == 0
    assert {name for name, *_ in ckpt.SCHEMA} <= set(ckpt.load_checkpoint(path))
