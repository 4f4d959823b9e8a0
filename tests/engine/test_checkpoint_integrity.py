"""Every file vertebra writes carries a content digest, and every read checks it (issue 17, finding 3).

torch's zip reader does not check CRCs, so before the digest one flipped byte inside a tensor of
``last.pth`` resumed with rc 0 as a slightly different run.  Here the byte is flipped inside the
largest tensor record of a real checkpoint; resume, eval and ``load_weights`` must all refuse it,
and the intact file must still load.
"""

from __future__ import annotations

import shutil
import struct
import zipfile

import pytest
import torch
import yaml

from vertebra import registry
from vertebra.cli import main
from vertebra.engine import checkpoint as ckpt
from vertebra.engine import train
from vertebra.errors import ArtifactError, CheckpointError
from vertebra.weights import Preprocessing, load_weights, save_artifact
from vertebra.weights.digest import content_digest, seal, verify_sealed

from engine_helpers import tiny, training_state


def flip_inside_largest_tensor(path, into):
    """Copy ``path`` to ``into`` with one byte flipped in the middle of its largest tensor record."""
    with zipfile.ZipFile(path) as archive:
        record = max((info for info in archive.infolist() if "/data/" in info.filename),
                     key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    start = record.header_offset + 30 + name_length + extra_length   # torch stores records uncompressed
    data[start + record.file_size // 2] ^= 0x01
    into.write_bytes(bytes(data))
    return into


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    config = tiny("semantic")
    train(config, out_dir=out, progress=False)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out


@pytest.fixture
def damaged(run, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(run, out)
    flip_inside_largest_tensor(run / "last.pth", out / "last.pth")
    return out


def test_the_flip_lands_in_a_tensor_that_torch_loads_silently(run, damaged):
    intact = torch.load(run / "last.pth", weights_only=True)
    flipped = torch.load(damaged / "last.pth", weights_only=True)   # torch itself notices nothing
    assert any(not torch.equal(intact["model"][key], flipped["model"][key]) for key in intact["model"])


def test_resume_refuses_a_damaged_checkpoint(damaged):
    config = tiny("semantic", epochs=2)
    with pytest.raises(CheckpointError, match=r"last\.pth.*damaged.*earlier checkpoint"):
        train(config, out_dir=damaged, resume=True, progress=False)


def test_resume_of_the_intact_checkpoint_continues(run, tmp_path):
    out = tmp_path / "intact"
    shutil.copytree(run, out)
    # the run trained 1 epoch; continuing to 2 changes the schedule, so it is allowed explicitly
    result = train(tiny("semantic", epochs=2), out_dir=out, resume=True, allow_changed=True, progress=False)
    assert result.epochs_done == 2


def test_eval_refuses_a_damaged_checkpoint(damaged, capsys):
    code = main(["eval", str(damaged / "config.yaml"), "--checkpoint", str(damaged / "last.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "damaged" in err and "last.pth" in err and "Traceback" not in err


def test_load_weights_refuses_a_damaged_training_checkpoint(run, damaged):
    model = registry.build_from_config({**tiny("semantic")["model"], "num_classes": 4})
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="damaged"):
        load_weights(model, damaged / "last.pth")
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert "loaded" in str(load_weights(model, run / "last.pth"))


def test_load_weights_verifies_an_artifact(tmp_path):
    model = registry.build("classifier", backbone="mobilenet_v3_small", num_classes=2)
    path = save_artifact(tmp_path / "model.safetensors", model, task="classification", class_names=["a", "b"],
                         preprocessing=Preprocessing("square", 32))
    assert "loaded" in str(load_weights(model, path))
    data = bytearray(path.read_bytes())
    data[-64] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        load_weights(model, path)


def test_a_checkpoint_without_its_digest_is_refused(tmp_path):
    path = ckpt.save_training_checkpoint(tmp_path / "last.pth", training_state())
    state = torch.load(path, weights_only=True)
    del state["sha256"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="no 'sha256' content digest"):
        ckpt.load_training_checkpoint(path)


def test_digest_is_canonical_and_sensitive():
    state = {"model": {"w": torch.arange(4.0), "b": torch.zeros(2, dtype=torch.bfloat16)},
             "epoch": 3, "lr": 0.1, "betas": (0.9, 0.99), "none": None, "flag": True, 7: "int key"}
    same = {7: "int key", "flag": True, "none": None, "betas": [0.9, 0.99], "lr": 0.1, "epoch": 3,
            "model": {"b": torch.zeros(2, dtype=torch.bfloat16), "w": torch.arange(4.0)}}
    assert content_digest(state) == content_digest(same)         # key order, tuple vs list: as loaded back
    for change in ({"epoch": 4}, {"lr": 0.1000001}, {"flag": 1}, {"7": "int key"},
                   {"model": {"w": torch.arange(4.0), "b": torch.ones(2, dtype=torch.bfloat16)}},
                   {"model": {"w": torch.arange(4.0).reshape(2, 2), "b": torch.zeros(2, dtype=torch.bfloat16)}}):
        assert content_digest({**state, **change}) != content_digest(state), change
    sealed = seal(state)
    assert verify_sealed(sealed) is None and verify_sealed({**sealed, "epoch": 4}) is not None


# -- finding 13: a well-sealed checkpoint whose content cannot be used ------------------------

def rewrite(run, tmp_path, edit):
    """A copy of the run whose last.pth was edited by ``edit(state)`` and sealed again (a valid digest)."""
    out = tmp_path / "edited"
    shutil.copytree(run, out)
    state = torch.load(out / "last.pth", weights_only=True)
    edit(state)
    ckpt.save_training_checkpoint(out / "last.pth", {k: v for k, v in state.items() if k != "format"})
    return out


def poison(state):
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = torch.full_like(state["model"][key], float("nan"))


def test_resume_and_eval_refuse_nan_weights(run, tmp_path, capsys):
    out = rewrite(run, tmp_path, poison)
    with pytest.raises(CheckpointError, match=r"weight model\[.*\] holds NaN"):
        train(tiny("semantic", epochs=2), out_dir=out, resume=True, progress=False)
    code = main(["eval", str(out / "config.yaml"), "--checkpoint", str(out / "last.pth")])
    err = capsys.readouterr().err
    assert code == 2 and "holds NaN" in err and "Traceback" not in err


def test_resume_with_an_optimizer_state_that_does_not_fit(run, tmp_path):
    out = rewrite(run, tmp_path, lambda state: state["optimizer"].update(param_groups=[]))
    with pytest.raises(CheckpointError, match=r"'optimizer' state does not fit"):
        train(tiny("semantic", epochs=2), out_dir=out, resume=True, allow_changed=True, progress=False)


def test_eval_and_resume_with_an_ema_state_that_does_not_fit(run, tmp_path, capsys):
    out = rewrite(run, tmp_path, lambda state: state.update(ema={"module.nope": torch.ones(1)}))
    code = main(["eval", str(out / "config.yaml"), "--checkpoint", str(out / "last.pth")])
    assert code == 2 and "'ema' state does not fit" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="'ema' state does not fit"):
        train(tiny("semantic", epochs=2, ema=0.9), out_dir=out, resume=True, allow_changed=True, progress=False)
