"""Run hygiene (issue 16, item 2): a used --out is refused, --overwrite replaces it, a lock keeps a
second run out, a resume with another config is refused with the difference, best.pth follows the
task's primary metric."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from vertebra import registry
from vertebra.cli import main
from vertebra.engine import train
from vertebra.engine.loop import _Run
from vertebra.engine.saving import BEST_FORMAT
from vertebra.engine.report import read_jsonl
from vertebra.engine.rundir import LOCK_NAME, claim_run_folder, read_lock
from vertebra.errors import CheckpointError, ConfigError, OutputError
from vertebra.weights import load_weights

from engine_helpers import tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 1-epoch run; tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny("semantic"), out_dir=out, progress=False)
    return out


def copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_a_run_leaves_best_last_and_the_artifact_and_no_lock(finished):
    names = set(os.listdir(finished))
    assert {"best.pth", "last.pth", "model.safetensors", "metrics.jsonl"} <= names and LOCK_NAME not in names
    best = torch.load(finished / "best.pth", weights_only=True)
    assert best["format"] == BEST_FORMAT and best["metric"] == "mIoU" and "optimizer" not in best
    assert best["value"] == read_jsonl(finished / "metrics.jsonl")[-1]["mIoU"]
    model = registry.build_from_config(best["model_config"])
    report = load_weights(model, finished / "best.pth")           # strict: every tensor, nothing else
    assert report.loaded > 0 and not report.missing and not report.unexpected


def test_a_used_folder_is_refused_and_overwrite_replaces_only_run_outputs(finished, tmp_path):
    out = copy(finished, tmp_path)
    log = (out / "metrics.jsonl").read_bytes()
    with pytest.raises(OutputError, match=r"already holds a run.*--resume.*--overwrite"):
        train(tiny("semantic"), out_dir=out, progress=False)
    assert (out / "metrics.jsonl").read_bytes() == log and not (out / LOCK_NAME).exists()
    (out / "notes.txt").write_text("mine")
    (out / "best.pth").write_bytes(b"stale")          # would pass for the new run's if left
    train(tiny("semantic", epochs=1, seed=1), out_dir=out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"  # not a run output: left alone
    assert torch.load(out / "best.pth", weights_only=True)["epoch"] == 1
    kinds = [record["kind"] for record in read_jsonl(out / "metrics.jsonl")]
    assert kinds.count("train") == 1                  # only the new run's log
    with pytest.raises(ConfigError, match="pass one of them"):
        train(tiny("semantic"), out_dir=out, resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="only applies with --resume"):
        train(tiny("semantic"), out_dir=out, allow_changed=True)


def test_a_rank_other_than_0_refuses_a_used_folder_too_without_claiming_it(finished, tmp_path, monkeypatch):
    out = copy(finished, tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")                   # refused before joining the process group
    with pytest.raises(OutputError, match="already holds a run"):
        train(tiny("semantic"), out_dir=out, progress=False)
    assert not (out / LOCK_NAME).exists()


def test_the_cli_refuses_a_used_folder_naming_overwrite(finished, tmp_path, capsys):
    out = copy(finished, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny("semantic")))
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err and "Traceback" not in err


def test_the_lock_keeps_a_second_run_out_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid}))
        with pytest.raises(OutputError, match=rf"in use by process {live.pid}"):
            train(tiny("semantic"), out_dir=out, progress=False)
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == live.pid    # the holder keeps it
    finally:
        live.kill()
        live.wait()
    with pytest.warns(UserWarning, match="no longer running; taking the folder over"):
        with claim_run_folder(out, (), resume=False, overwrite=False):
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
            with pytest.raises(OutputError, match=rf"in use by process {os.getpid()}"):
                with claim_run_folder(out, (), resume=False, overwrite=False):
                    pass                                # two runs of one process cannot share it either
    assert not (out / LOCK_NAME).exists()
    (out / LOCK_NAME).write_text(json.dumps({"host": "another-host", "pid": 1}))
    with pytest.raises(OutputError, match="another-host"):                  # cannot be judged: holds
        with claim_run_folder(out, (), resume=False, overwrite=False):
            pass


def test_resume_with_another_config_is_refused_with_the_difference(finished, tmp_path):
    out = copy(finished, tmp_path)
    changed = tiny("semantic", batch_size=1, optimizer={"name": "sgd", "lr": 0.02})
    with pytest.raises(CheckpointError) as info:
        train(changed, out_dir=out, resume=True, progress=False)
    message = str(info.value)
    assert "optimizer.lr was 0.01, now 0.02" in message and "batch_size was 2, now 1" in message
    assert "--allow-changed" in message
    same = tiny("semantic", data={**tiny("semantic")["data"], "num_workers": 1}, log_every=5)
    train(same, out_dir=out, resume=True, progress=False)          # run settings may change
    with pytest.warns(UserWarning, match="changed config"):
        train(changed, out_dir=out, resume=True, allow_changed=True, progress=False)
    record = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "config_change"]
    assert len(record) == 1 and "optimizer.lr was 0.01, now 0.02" in record[0]["changes"]


def test_best_pth_keeps_the_best_epoch_of_the_primary_metric(tmp_path, monkeypatch):
    scores = iter([0.5, 0.7, 0.6])
    monkeypatch.setattr(_Run, "evaluate", lambda self: {"mIoU": next(scores), "pixel_acc": 0.1})
    out = tmp_path / "run"
    holders = []
    train(tiny("semantic", epochs=3), out_dir=out, progress=False, on_step=lambda *_: holders.append(read_lock(out)))
    best = torch.load(out / "best.pth", weights_only=True)
    assert (best["epoch"], best["value"]) == (2, 0.7)
    assert holders and all(h["pid"] == os.getpid() for h in holders) and read_lock(out) is None   # held, then freed
