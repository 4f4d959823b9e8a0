"""Atomic checkpoint writes and safe reads (vertebra.engine.checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vertebra import atomic
from vertebra.atomic import atomic_open
from vertebra.engine.checkpoint import load_checkpoint, save_atomic
from vertebra.errors import CheckpointError, VertebraError, WeightsError

from engine_helpers import killed_mid_write

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "vertebra-test-io-pwned"


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name not in keep)


def test_save_atomic_roundtrip_creates_parents_and_leaves_no_temp(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "rng": torch.get_rng_state()}
    path = save_atomic(state, tmp_path / "runs" / "a" / "last.pt")
    assert path == tmp_path / "runs" / "a" / "last.pt"
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["rng"], state["rng"])
    assert _leftovers(path.parent, {"last.pt"}) == []
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~atomic._UMASK  # not mkstemp's 0600


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_atomic({"epoch": 1}, tmp_path / "last.pt")
    before = path.read_bytes()

    def half_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half of a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"last.pt"}) == []


def test_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(tmp_path / "metrics.json", "w", encoding="utf-8") as handle:
            handle.write('{"partial": ')
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_open_text_mode_replaces_whole_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("old and long content\n")
    with atomic_open(target, "w", encoding="utf-8") as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"


def test_atomic_open_refuses_non_write_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must start with 'w'"):
        with atomic_open(tmp_path / "x", "ab"):
            pass


def test_process_killed_mid_write_never_leaves_a_partial_target(tmp_path):
    """A hard crash (no cleanup, no finally) between writing and renaming: the old file survives."""
    target = tmp_path / "last.pt"
    save_atomic({"epoch": 1}, target)
    killed_mid_write(target)
    assert load_checkpoint(target) == {"epoch": 1}
    # the abandoned temp file is hidden (dot-prefixed) and never has the target's name
    assert all(name.startswith(".last.pt.") for name in _leftovers(tmp_path, {"last.pt"}))


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_load_checkpoint_refuses_damaged_files(tmp_path, damage):
    path = save_atomic({"w": torch.randn(64, 64)}, tmp_path / "ck.pt")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 8, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt" in message
    assert isinstance(info.value, WeightsError) and isinstance(info.value, VertebraError)


def test_load_checkpoint_refuses_non_allowlisted_objects_but_accepts_them_when_trusted(tmp_path):
    path = save_atomic({"numpy_rng": np.random.default_rng(0).bit_generator.state["state"]["state"],
                        "array": np.arange(3)}, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError, match="safe_globals"):
        load_checkpoint(path)
    trusted = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype("int64"))]
    loaded = load_checkpoint(path, safe_globals=trusted)
    assert loaded["array"].tolist() == [0, 1, 2]


def _plant_marker():  # what a malicious pickle would run on load
    MARKER.write_text("code ran")


class _Evil:
    def __reduce__(self):
        return (_plant_marker, ())


def test_load_checkpoint_never_runs_pickled_code(tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="not unpickled under weights_only"):
        load_checkpoint(path)
    assert not MARKER.exists()
