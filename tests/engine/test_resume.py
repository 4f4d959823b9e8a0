"""Resuming reaches the same weights as an uninterrupted run; NaN stops keep the last good checkpoint."""

from __future__ import annotations

import signal

import pytest
import torch

from vertebra.engine import NonFiniteLossError, train
from vertebra.engine import tasks as tasks_module
from vertebra.errors import CheckpointError

from engine_helpers import sigterm_at, tiny

# 12 training images, batch 4: three steps per epoch, so a stop can land in the middle of one.
# EMA on, so its state is part of what must match.
RESUMABLE = dict(epochs=3, batch_size=4, ema=0.9, optimizer={"name": "sgd", "lr": 0.05},
                 schedule={"warmup_epochs": 0.5})


def config(num_workers=0):
    base = tiny("semantic", **RESUMABLE)
    base["data"]["num_train"] = 12
    base["data"]["num_workers"] = num_workers
    return base


def final_state(out):
    return torch.load(out / "last.pth", weights_only=True)


def assert_same_run(a, b):
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert [r for r in a["history"] if r["kind"] != "train"] == [r for r in b["history"] if r["kind"] != "train"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("uninterrupted")
    train(config(), out_dir=out, progress=False)
    return final_state(out)


@pytest.mark.parametrize("stop_at, expected_position", [
    ((1, 1), (1, 2)),   # SIGTERM during epoch 2: stops after its 2nd step (mid-epoch checkpoint)
    ((0, 2), (1, 0)),   # SIGTERM on the last step of epoch 1: finishes, evaluates, stops at the boundary
])
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path, uninterrupted, stop_at, expected_position):
    out = tmp_path / "run"
    stopped = train(config(), out_dir=out, progress=False, on_step=sigterm_at(*stop_at))
    assert stopped.stopped_by == "SIGTERM"
    state = final_state(out)
    assert (state["epoch"], state["step_in_epoch"]) == expected_position
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL      # handlers are put back

    resumed = train(config(), out_dir=out, progress=False, resume=True)
    assert resumed.stopped_by is None and resumed.epochs_done == 3
    assert_same_run(final_state(out), uninterrupted)
    assert resumed.metrics == pytest.approx({k: v for k, v in uninterrupted["history"][-1].items()
                                             if k not in ("kind", "epoch")})


def test_resume_with_worker_processes_matches_the_in_process_run(tmp_path, uninterrupted):
    """Augmentation is a function of (seed, epoch, sample), not of the worker that loads it: two workers,
    a stop mid-epoch and a resume reach the same weights as the uninterrupted num_workers=0 run."""
    out = tmp_path / "run"
    stopped = train(config(num_workers=2), out_dir=out, progress=False, on_step=sigterm_at(1, 1))
    assert stopped.stopped_by == "SIGTERM"
    train(config(num_workers=2), out_dir=out, progress=False, resume=True)
    assert_same_run(final_state(out), uninterrupted)


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    out = tmp_path / "run"
    train(tiny("semantic"), out_dir=out, progress=False)
    other = tiny("semantic")
    other["model"]["backbone"] = {"name": "mobilenet_v3_large"}
    with pytest.raises(CheckpointError, match="another architecture.*backbone.name was 'mobilenet_v3_small', "
                                              "now 'mobilenet_v3_large'"):
        train(other, out_dir=out, progress=False, resume=True)


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny("semantic"), out_dir=tmp_path, progress=False, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = tasks_module.SemanticTask.loss
    calls = {"n": 0}

    def poisoned(self, model, batch):
        loss, parts, count = real_loss(self, model, batch)
        calls["n"] += 1
        if calls["n"] == 4:                      # the 2nd step of epoch 2
            loss = loss * float("nan")
        return loss, parts, count

    monkeypatch.setattr(tasks_module.SemanticTask, "loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 2, step 2.*last good checkpoint .*last.pth.* "
                                                 r"\(after epoch 1\) was kept.*Lower optimizer.lr"):
        train(tiny("semantic", epochs=3, batch_size=2), out_dir=out, progress=False)
    state = final_state(out)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
