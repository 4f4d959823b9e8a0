"""A refused pickle is named as refused, never as a corrupt file (issue 17, finding 14).

torch 2.x words each weights-only refusal differently; a reference to a blocked module (``os``,
``subprocess``) used to be reported as "truncated or corrupt".  Each file here is refused by
torch; the message must name what was refused and the remedy that applies.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch

from vertebra.engine.checkpoint import load_checkpoint
from vertebra.errors import CheckpointError, WeightsError
from vertebra.weights import read_state_dict
from vertebra.weights.files import describe_load_failure


class Custom:
    """Any class of one's own: not allowed by default, allowed once trusted."""


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("true",))


def with_pickle(path: Path, data: bytes) -> Path:
    """A torch zip file whose data.pkl is ``data`` (what a hand-made or foreign file looks like)."""
    buffer = io.BytesIO()
    torch.save({"a": 1}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info, data if info.filename.endswith("data.pkl") else source.read(info.filename))
    return path


@pytest.mark.parametrize("payload, named, remedy", [
    (Custom(), f"{__name__}.Custom", rf"safe_globals=\[{__name__}.Custom\]"),
    (torch.nn.Linear(1, 1), "torch.nn.modules.linear.Linear", "safe_globals"),
    (RunsACommand(), "posix.system" if os.name == "posix" else "system", "may be malicious; do not load it"),
])
def test_a_refused_reference_is_named_with_its_remedy(tmp_path, payload, named, remedy):
    path = tmp_path / "refused.pth"
    torch.save({"w": torch.ones(1), "x": payload}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert named in message and "truncated or corrupt" not in message
    assert re.search(remedy, message), message
    with pytest.raises(WeightsError, match=named.replace(".", r"\.")):
        read_state_dict(path)


def test_an_unsupported_pickle_instruction_says_how_the_file_was_made(tmp_path):
    path = with_pickle(tmp_path / "protocol4.pth", pickle.dumps(os.getcwd, protocol=4))   # STACK_GLOBAL
    with pytest.warns(UserWarning, match="pickle protocol"), pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "Unsupported operand 149, a pickle instruction torch.save does not write" in str(info.value)


@pytest.mark.parametrize("text, named", [
    ("Trying to call reduce for unrecognized function <built-in function getcwd>", "<built-in"),
    ("Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`, "
     "but got <class 'mypkg.Thing'>", "mypkg.Thing"),
    ("Can only create new object for nn.Parameter or classes allowlisted via `add_safe_globals` but got "
     "<class 'mypkg.Other'>", "mypkg.Other"),
])
def test_other_refusal_wordings_name_the_reference(tmp_path, text, named):
    error = pickle.UnpicklingError(f"Weights only load failed.\n\n{text}\n\nCheck the documentation")
    message = describe_load_failure(tmp_path / "f.pth", error, what="weights file", remedy="R",
                                    allow="torch.serialization.add_safe_globals([...])")
    assert named in message and "not unpickled under weights_only" in message and "corrupt" not in message


def test_a_damaged_file_is_still_called_damaged(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
