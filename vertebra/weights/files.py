"""Reading a weights file without surprises: hash first, ``weights_only=True``, a message that names the file.

A checkpoint is data, and unpickling arbitrary objects from a file would run arbitrary code, so
``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)`` and ``.safetensors`` with
safetensors.  A corrupt, truncated or foreign file becomes an error that names the file and what to
do, not a ``zipfile`` stack trace; :func:`describe_load_failure` writes that message for weights
files here and for training checkpoints in :mod:`vertebra.engine.checkpoint`.

Training scripts wrap state dicts in containers (``{"state_dict": ...}``, ``{"model": ...}``, a DDP
``module.`` prefix); :func:`unwrap_state_dict` finds the flat ``{name: tensor}`` inside them
explicitly and says which steps it took, so the load report can tell.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError, WeightsError
from .cache import verify_sha256
from .digest import is_sealed_format, verify_sealed

__all__ = ["read_state_dict", "unwrap_state_dict", "describe_load_failure", "CONTAINER_KEYS"]

# Containers training scripts commonly wrap a state dict in, tried in this order.
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def read_state_dict(path: str | os.PathLike[str], *, sha256: str | None = None) -> dict[str, Any]:
    """Read a weights file safely (``weights_only=True`` or safetensors), verifying ``sha256`` first.

    Returns the raw object for ``.pth``/``.pt`` (possibly a container), a flat dict for safetensors.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(f"weights file {str(file)!r} does not exist (or is not a file)")
    if sha256:
        verify_sha256(file, sha256, what="weights file")
    if file.suffix == ".safetensors" and _is_artifact(file):
        from .artifact import read_artifact   # verifies the artifact's digest; ArtifactError names the file

        return read_artifact(file).state_dict
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # RuntimeError (zip), UnpicklingError, EOFError, SafetensorError ...
        raise WeightsError(describe_load_failure(file, error, what="weights file",
                                                 remedy="delete it and download or export it again",
                                                 allow="torch.serialization.add_safe_globals([...])")) from error
    if is_sealed_format(state):   # a training checkpoint vertebra wrote: its digest must hold
        problem = verify_sealed(state)
        if problem is not None:
            raise CheckpointError(f"checkpoint {str(file)!r} is damaged: {problem}; nothing was loaded. "
                                  f"Copy it again from where it was written, or use an earlier checkpoint")
    return state


def _is_artifact(file: Path) -> bool:
    """Whether a safetensors file carries vertebra's artifact header (then its digest is checked)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return "vertebra" in (handle.metadata() or {})
    except Exception:  # noqa: BLE001 - unreadable: the plain read below reports it
        return False


def unwrap_state_dict(state: Any, label: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Find the flat ``{name: tensor}`` inside common training-checkpoint containers, explicitly.

    Returns the flat dict and the steps taken (container keys, then ``"module."`` if a DDP prefix
    was stripped); ``label`` names the source in errors.
    """
    steps: list[str] = []
    for _ in range(3):  # {"state_dict": {"model": ...}} at most
        if not isinstance(state, Mapping):
            raise WeightsError(f"{label}: expected a state dict (a mapping of names to tensors), "
                               f"found {type(state).__name__}")
        if state and all(isinstance(value, Tensor) for value in state.values()):
            break
        inner = next((key for key in CONTAINER_KEYS if isinstance(state.get(key), Mapping)), None)
        if inner is None:
            shown = ", ".join(repr(key) for key in list(state)[:10])
            non_tensor = [key for key, value in state.items() if not isinstance(value, Tensor)][:5]
            raise WeightsError(f"{label}: not a state dict and no state dict found under "
                               f"{', '.join(map(repr, CONTAINER_KEYS))}; top-level keys: {shown or 'none'}"
                               + (f" (non-tensor entries: {', '.join(map(repr, non_tensor))})" if state else ""))
        steps.append(inner)
        state = state[inner]
    else:
        raise WeightsError(f"{label}: state dict nested too deeply ({' > '.join(steps)})")
    flat = {str(key): value for key, value in state.items()}
    if flat and all(key.startswith("module.") for key in flat):
        flat = {key[len("module."):]: value for key, value in flat.items()}
        steps.append("module.")
    return flat, tuple(steps)


def describe_load_failure(path: Path, error: BaseException, *, what: str, remedy: str, allow: str) -> str:
    """Say what is wrong with the file and what to do, keeping torch's reason for the curious.

    ``what`` names the kind of file ("weights file"), ``remedy`` what to do about a damaged one,
    ``allow`` how to admit a class the file references once the user trusts it (``[...]`` in it
    is replaced by the class).  torch's weights-only unpickler words each refusal differently
    (:data:`_REFUSALS`); a refused reference is named, never reported as a corrupt file.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    for pattern, explain in _REFUSALS:
        found = re.search(pattern, text)
        if found:
            return f"{what} {str(path)!r} " + explain(found.group(1), allow)
    unpickler = re.search(r"WeightsUnpickler error: \s*([^\n]+)", text)
    reason = unpickler.group(1).strip() if unpickler else (_first_sentence(text) or type(error).__name__)
    if reason.startswith("Unsupported operand"):   # garbage bytes, or a pickle torch.save did not write
        reason += ", a pickle instruction torch.save does not write (pickle.dump with protocol 4 does)"
    size = path.stat().st_size if path.exists() else 0
    return (f"{what} {str(path)!r} ({size} bytes) is truncated or corrupt, or not a PyTorch file "
            f"({type(error).__name__}: {reason}); {remedy}")


def _not_allowed(name: str, allow: str) -> str:
    return (f"holds a reference to {name}, which is not unpickled under weights_only=True (unpickling it could "
            f"run code); save only tensors and plain containers, or, if you trust the file, allow it with "
            f"{allow.replace('[...]', f'[{name}]')}")


def _blocked(name: str, allow: str) -> str:
    return (f"holds a reference to {name}, from a module torch never unpickles (it runs commands or code): the "
            f"file is not plain data and may be malicious; do not load it, and re-save the weights with "
            f"torch.save(model.state_dict(), ...) if you wrote it")


#: torch's weights-only refusals (torch 2.x wording) -> what to say; group 1 is the refused thing.
_REFUSALS = (
    (r"Unsupported global: GLOBAL ([\w.<>]+)", _not_allowed),
    (r"Trying to load unsupported GLOBAL ([\w.<>]+) whose module", _blocked),
    (r"Trying to call reduce for unrecognized function (\S+)", _not_allowed),
    (r"Can only (?:create new object|build)[^\n]*but got <class '([\w.<>]+)'>", _not_allowed),
)


def _first_sentence(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    return text.split(". ")[0].splitlines()[0].rstrip(".") if text else ""
