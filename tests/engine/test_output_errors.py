"""A write that fails (disk full, read-only, a file where a folder should be) is one OutputError
naming the path and what to do, never a traceback, and loses nothing (issue 17, finding 10).

Tests run as root, where chmod does not stop writes, so read-only and full disks are
monkeypatched OSErrors; a file standing where a folder should be is real.
"""

from __future__ import annotations

import errno
import os

import pytest
import torch
import yaml
from PIL import Image

from vertebra import atomic
from vertebra.atomic import atomic_open, check_output_folder
from vertebra.cli import main
from vertebra.engine import checkpoint as ckpt
from vertebra.engine import train
from vertebra.errors import OutputError, VertebraError

from engine_helpers import tiny


def failing(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


@pytest.mark.parametrize("code, said", [(errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "quota"),
                                        (errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_a_failing_checkpoint_write_is_an_output_error_and_keeps_the_old_file(tmp_path, monkeypatch, code, said):
    path = ckpt.save_atomic({"epoch": 1}, tmp_path / "last.pth")
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing(code))
    with pytest.raises(OutputError) as info:
        ckpt.save_atomic({"epoch": 2}, path)
    error = info.value
    assert isinstance(error, VertebraError) and isinstance(error, OSError) and error.errno == code
    assert str(path) in str(error) and said in str(error) and "unchanged" in str(error)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["last.pth"]


@pytest.mark.parametrize("code, said", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                                        (errno.ENOSPC, "disk is full")])
def test_a_folder_that_refuses_new_files(tmp_path, monkeypatch, code, said):
    monkeypatch.setattr(atomic.tempfile, "mkstemp", failing(code))
    with pytest.raises(OutputError, match=said):
        with atomic_open(tmp_path / "metrics.json", "w") as handle:
            handle.write("{}")
    with pytest.raises(OutputError, match=said):
        check_output_folder(tmp_path, probe=True)
    with pytest.raises(OutputError, match=said):
        check_output_folder(tmp_path / "not" / "yet", probe=True)
    assert not (tmp_path / "not").exists()


def test_a_file_where_a_folder_should_be(tmp_path):
    (tmp_path / "runs").write_text("I am a file")
    with pytest.raises(OutputError, match=r"runs.*a file stands where a folder should be"):
        ckpt.save_atomic({"epoch": 1}, tmp_path / "runs" / "last.pth")
    with pytest.raises(OutputError, match=r"runs/deeper.*a file stands where a folder should be"):
        check_output_folder(tmp_path / "runs" / "deeper")
    assert check_output_folder(tmp_path / "fine" / "deeper", probe=True) == tmp_path / "fine" / "deeper"
    assert not (tmp_path / "fine").exists()
    (tmp_path / "last.pth").mkdir()
    with pytest.raises(OutputError, match="a folder stands where the file should be"):
        ckpt.save_atomic({"epoch": 1}, tmp_path / "last.pth")


# -- through train and eval -------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    train(tiny("semantic"), out_dir=out, progress=False)
    (out / "config.yaml").write_text(yaml.safe_dump(tiny("semantic")))
    return out


def test_train_into_a_file_fails_at_once_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny("semantic")))
    (tmp_path / "out").write_text("not a folder")
    assert main(["train", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "a file stands where a folder" in err and "Traceback" not in err


def test_train_into_a_read_only_folder_fails_before_the_first_step(tmp_path, monkeypatch):
    steps = []
    monkeypatch.setattr(atomic.tempfile, "mkstemp", failing(errno.EROFS))
    with pytest.raises(OutputError, match="read-only"):
        train(tiny("semantic"), out_dir=tmp_path / "out", progress=False, on_step=lambda *a: steps.append(a))
    assert steps == []


def test_a_full_disk_at_the_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny("semantic")))
    monkeypatch.setattr(ckpt.torch, "save", failing(errno.ENOSPC))
    assert main(["train", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "last.pth" in err and "the disk is full" in err and "Traceback" not in err


def test_eval_prints_the_metrics_before_a_failing_predictions_png(run, tmp_path, monkeypatch, capsys):
    real_mkstemp = atomic.tempfile.mkstemp

    def mkstemp(*args, **kwargs):   # the generated data still lands; only the PNG (written atomically) cannot
        if "predictions.png" in kwargs.get("prefix", ""):
            failing(errno.EROFS)()
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    code = main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pth"),
                 "--out", str(tmp_path / "ev")])
    captured = capsys.readouterr()
    assert code == 2
    assert "mIoU" in captured.out and "pixel_acc" in captured.out
    assert "predictions.png" in captured.err and "read-only" in captured.err and "Traceback" not in captured.err


def test_eval_into_a_file_fails_before_evaluating(run, tmp_path, capsys):
    (tmp_path / "ev").write_text("a file")
    code = main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pth"),
                 "--out", str(tmp_path / "ev")])
    captured = capsys.readouterr()
    assert code == 2 and "a file stands where a folder" in captured.err and "mIoU" not in captured.out


def test_eval_whose_data_cannot_be_generated_is_one_line(run, tmp_path, monkeypatch, capsys):
    """The shapes data is generated into --out; a read-only or full disk there is an OutputError, not a traceback."""
    monkeypatch.setattr(Image.Image, "save", failing(errno.EROFS))
    code = main(["eval", str(run / "config.yaml"), "--checkpoint", str(run / "last.pth"),
                 "--out", str(tmp_path / "ev")])
    captured = capsys.readouterr()
    assert code == 2 and "read-only" in captured.err and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1
