"""Temporaries abandoned by a killed save are removed by the next save, live ones never (issue 17, finding 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from vertebra import atomic
from vertebra.atomic import atomic_open, remove_stale_temporaries
from vertebra.engine.checkpoint import load_checkpoint, save_atomic

from engine_helpers import killed_mid_write


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def temp(directory, middle, *, age_s=0.0, target="last.pth"):
    path = directory / f".{target}.{middle}.tmp"
    path.write_bytes(b"half a checkpoint")
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return path


def test_a_save_killed_mid_write_leaves_a_temporary_the_next_save_removes(tmp_path):
    target = tmp_path / "last.pth"
    save_atomic({"epoch": 1}, target)
    killed_mid_write(target)
    orphans = [p for p in tmp_path.iterdir() if p.name != "last.pth"]
    assert len(orphans) == 1 and orphans[0].name.startswith(".last.pth.")
    save_atomic({"epoch": 2}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]
    assert load_checkpoint(target) == {"epoch": 2}


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path):
    host, old = atomic._HOST, atomic.STALE_AFTER_S + 60
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        removed = {
            temp(tmp_path, f"{host}-{dead_pid()}.abc_1234"),                # writer gone
            temp(tmp_path, f"{host}-{live.pid}.oldlive1", age_s=old),      # pid reused long ago
            temp(tmp_path, "ffffff-12.otherhst", age_s=old),               # another host, abandoned
            temp(tmp_path, "a1b2c3d4", age_s=old),                         # written before names had a writer
        }
        kept = {
            temp(tmp_path, f"{host}-{live.pid}.livewrtr"),                  # a concurrent writer, running
            temp(tmp_path, f"{host}-{os.getpid()}.mythread", age_s=old),   # this process (another thread)
            temp(tmp_path, "ffffff-12.otherhst_fresh"),                    # another host, still writing
            temp(tmp_path, "a1b2c3d5"),                                    # no writer recorded, recent
            temp(tmp_path, f"{host}-{dead_pid()}.abc_5678", target="last.pth.bak"),   # another target
            temp(tmp_path, f"{host}-{dead_pid()}.abc_9999", target="best.pth"),
            temp(tmp_path, "bak", age_s=old),                              # `.last.pth.bak.tmp`: not ours
        }
        assert set(remove_stale_temporaries(tmp_path / "last.pth")) == removed
        assert all(path.exists() for path in kept) and not any(path.exists() for path in removed)
    finally:
        live.kill()
        live.wait()


def test_the_temporary_name_records_its_writer(tmp_path, monkeypatch):
    seen = []
    real = atomic.tempfile.mkstemp
    monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda **kw: seen.append(kw["prefix"]) or real(**kw))
    with atomic_open(tmp_path / "metrics.json", "w") as handle:
        handle.write("{}")
    assert seen == [f".metrics.json.{atomic._HOST}-{os.getpid()}."]


def test_a_missing_folder_is_no_error():
    assert remove_stale_temporaries("/nonexistent/folder/last.pth") == []
