"""Training checkpoints: everything a run needs to continue bit-for-bit, written atomically.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``): model (and EMA)
state, optimizer, scheduler, GradScaler, the position (``epoch`` = epochs fully done,
``step_in_epoch`` = batches done inside the next one, ``global_step``), the RNG states of python,
numpy, torch and CUDA, the full training config, the model's registry config and the metrics
history (so the curves PNG still covers the whole run after ``--resume``).

A training run can be killed at any instant (SIGTERM, Ctrl-C, out of memory, a full disk).  If it
died while ``torch.save`` was halfway through ``last.pth``, a plain write would leave a truncated file
in place of the last good checkpoint and ``--resume`` nothing to resume from.  So every write here
(:func:`vertebra.atomic.atomic_open`, :func:`save_atomic`) goes to a temporary file *in the same directory*
(``os.replace`` is only atomic within one file system), is flushed and fsync'ed, and then replaces
the target in one step: readers see the old file or the new one, never a mix.

Every training checkpoint is sealed with a content digest (``"sha256"``, over every other field;
:mod:`vertebra.weights.digest`, the same one model artifacts carry), because torch's zip reader
does not check CRCs: a flipped byte inside a tensor would otherwise resume silently as another
run.  Every read of a file carrying vertebra's format marker checks it (resume, eval, and
``load_weights`` of a checkpoint).

Reads (:func:`load_checkpoint`) use ``torch.load(weights_only=True)``: a checkpoint is data, and
unpickling arbitrary objects would run arbitrary code.  A corrupt or truncated file becomes a
:class:`CheckpointError` that names the file.  A checkpoint whose architecture differs from the
model being trained is refused, naming the difference, before anything is loaded; the key and
shape comparison is the weights loader's own (:func:`vertebra.weights.keys.compare_keys`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..atomic import atomic_open
from ..errors import CheckpointError
from ..weights.digest import is_sealed_format, seal, verify_sealed
from ..weights.files import describe_load_failure
from ..weights.keys import compare_keys

__all__ = ["FORMAT", "SCHEMA", "check_training_state", "load_part", "capture_rng", "restore_rng",
           "save_training_checkpoint", "load_training_checkpoint", "check_architecture", "unwrap", "save_atomic",
           "load_checkpoint", "config_diff"]

PathLike = str | os.PathLike[str]

FORMAT = "vertebra-train-checkpoint/1"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# -- RNG -------------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states as weights_only-safe values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files that are either complete or absent -------------------------------------------------

def save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)``, but ``path`` is never left half-written.

    Returns the path written.  Anything ``torch.save`` accepts is accepted; keep checkpoints to
    tensors and plain Python containers so :func:`load_checkpoint` can read them back with
    ``weights_only=True``.
    """
    target = Path(path)
    with atomic_open(target, "wb") as handle:
        torch.save(obj, handle)
    return target


def load_checkpoint(path: PathLike, *, map_location: Any = "cpu",
                    safe_globals: Sequence[Any] = ()) -> Any:
    """Read a checkpoint written by :func:`save_atomic` (or ``torch.save``) without running pickled code.

    Args:
        path: the checkpoint file.
        map_location: where tensors land; CPU by default so a GPU checkpoint opens anywhere.
        safe_globals: extra classes or functions the file may reference (passed to
            ``torch.serialization.safe_globals``), for checkpoints that hold more than tensors
            and builtin containers, e.g. numpy RNG state.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or references objects that are
            not allowed under ``weights_only=True``; the message names the file.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"checkpoint {str(source)!r} does not exist (or is not a file)")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            state = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
        raise CheckpointError(describe_load_failure(
            source, error, what="checkpoint", remedy="delete it and use an earlier checkpoint or retrain",
            allow="load_checkpoint(..., safe_globals=[...])")) from error
    if is_sealed_format(state):
        problem = verify_sealed(state)
        if problem is not None:
            raise CheckpointError(f"checkpoint {str(source)!r} is damaged: {problem}; nothing was loaded. "
                                  f"Copy it again from where it was written, or use an earlier checkpoint")
        if state.get("format") == FORMAT:
            check_training_state(state, source)
    return state


# -- what a training checkpoint holds ---------------------------------------------------------

def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def _is_optimizer(value: Any) -> bool:
    return (isinstance(value, Mapping) and isinstance(value.get("state"), Mapping)
            and isinstance(value.get("param_groups"), list)
            and all(isinstance(group, Mapping) for group in value["param_groups"]))


def _is_running(value: Any) -> bool:
    return (isinstance(value, Mapping) and isinstance(value.get("loss_sums"), Mapping)
            and all(_is_number(v) for v in value["loss_sums"].values())
            and _is_count(value.get("images")) and _is_number(value.get("seconds")))


def _is_rng(value: Any) -> bool:
    """One rank's :func:`capture_rng` state, shaped as :func:`restore_rng` unpacks it."""
    if not isinstance(value, Mapping):
        return False
    python, numpy_state = value.get("python"), value.get("numpy")
    return (isinstance(python, (list, tuple)) and len(python) == 3 and isinstance(python[0], int)
            and isinstance(python[1], (list, tuple)) and all(isinstance(v, int) for v in python[1])
            and isinstance(numpy_state, (list, tuple)) and len(numpy_state) == 5
            and isinstance(numpy_state[0], str) and isinstance(numpy_state[1], Tensor)
            and all(_is_number(v) for v in numpy_state[2:])
            and isinstance(value.get("torch"), Tensor) and value["torch"].dtype == torch.uint8
            and isinstance(value.get("cuda", []), (list, tuple)))


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


#: Every field :meth:`vertebra.engine.saving.RunFiles.state` writes: (field, what it must be, check,
#: may be null).  One table, checked on every read, so a malformed file fails naming its field
#: instead of as a KeyError or TypeError deep inside resume or eval.
SCHEMA: tuple[tuple[str, str, Callable[[Any], bool], bool], ...] = (
    ("model", "a state dict (parameter names -> tensors)", _is_state_dict, False),
    ("ema", "an EMA state dict (names -> tensors) or null", _is_state_dict, True),
    ("optimizer", "an optimizer state dict ('state' mapping, 'param_groups' list)", _is_optimizer, False),
    ("scheduler", "a scheduler state dict (a mapping)", lambda v: isinstance(v, Mapping), False),
    ("scaler", "a GradScaler state dict (a mapping) or null", lambda v: isinstance(v, Mapping), True),
    ("epoch", "the number of epochs done, an integer >= 0", _is_count, False),
    ("step_in_epoch", "the batches done in the next epoch, an integer >= 0", _is_count, False),
    ("global_step", "the optimizer steps done, an integer >= 0", _is_count, False),
    ("running", "the epoch's running totals (loss_sums, images, seconds)", _is_running, False),
    ("rng", "a list of per-process RNG states", _list_of(_is_rng), False),
    ("world_size", "the number of processes, an integer >= 1", lambda v: _is_count(v) and v >= 1, False),
    ("config", "the training config (a mapping)", lambda v: isinstance(v, Mapping), False),
    ("model_config", "the model's registry config (a mapping) or null", lambda v: isinstance(v, Mapping), True),
    ("history", "the log records (a list of mappings)", _list_of(lambda v: isinstance(v, Mapping)), False),
)


def check_training_state(state: Mapping[str, Any], path: PathLike) -> None:
    """Refuse a training checkpoint whose fields do not match :data:`SCHEMA`, or with non-finite weights.

    Weights that are NaN or infinite would resume or evaluate without a word (the loop stops on a
    non-finite loss before saving, so such a file was damaged or edited); the first bad tensor is named.
    """
    where = f"training checkpoint {str(path)!r}"
    for name, what, check, nullable in SCHEMA:
        if name not in state:
            raise CheckpointError(f"{where} has no {name!r} field ({what}); it was not written by "
                                  f"'vertebra train' or was edited: use an earlier checkpoint or retrain")
        value = state[name]
        if not ((nullable and value is None) or check(value)):
            shown = repr(value) if not isinstance(value, (Mapping, list, Tensor)) else type(value).__name__
            raise CheckpointError(f"{where}: field {name!r} must be {what}, got {shown[:80]}; "
                                  f"the file was edited or damaged: use an earlier checkpoint or retrain")
    for part in ("model", "ema"):
        for key, tensor in (state[part] or {}).items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{where}: weight {part}[{key!r}] holds NaN or infinite values; the run it "
                                      f"came from diverged or the file was damaged: use an earlier checkpoint")


def load_part(target: Any, part: Any, name: str, path: PathLike) -> None:
    """``target.load_state_dict(part)`` (optimizer, scheduler, scaler, EMA), a misfit named as such.

    The schema says each part is a state dict; whether it fits *this* run's optimizer or schedule
    (another optimizer, an edited file) only its ``load_state_dict`` knows, in torch's own words.
    """
    try:
        target.load_state_dict(part)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
        raise CheckpointError(f"{str(path)!r}: its {name!r} state does not fit this run's {name} ({error}); "
                              f"use the config the run was started with (stored in the checkpoint), "
                              f"or start a new run without --resume") from error


# -- save / load -----------------------------------------------------------------------------

def save_training_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (see module docstring) atomically, sealed with its content digest; returns the path.

    The digest (:func:`vertebra.weights.digest.seal`, stored as ``"sha256"``) is what lets every
    later read refuse a file damaged on disk or in transit: torch itself would load it silently.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(seal({"format": FORMAT, **state}), path)
    return path


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (weights_only=True); refuse files that are not one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; train first, or point "
                              f"--checkpoint at a file written by 'vertebra train' (e.g. OUT/last.pth)")
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a vertebra training checkpoint (no {FORMAT!r} "
                              f"marker); plain weights files are loaded with vertebra.weights.load_weights")
    return state


def check_architecture(state: Mapping[str, Any], model: nn.Module, path: str | Path) -> None:
    """Refuse a checkpoint written for another architecture, naming what differs.

    Compares the registry configs first (the readable difference) and then every parameter and
    buffer name and shape (catches hand-built models and edited configs alike).  A checkpoint
    written from this model matches exactly, so nothing is tolerated here, not even the BatchNorm
    counters a weights load may lack.
    """
    model = unwrap(model)
    ours, theirs = getattr(model, "config", None), state.get("model_config")
    if ours is not None and theirs is not None and _canonical(ours) != _canonical(theirs):
        diffs = [line for _, line in config_diff(theirs, ours, "model")]
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for another architecture ({'; '.join(diffs[:6])}); "
            f"use the config it was trained with (stored in the checkpoint) or start a new run without --resume")
    fit = compare_keys(model, state["model"])
    if not fit.exact:
        shapes = {key: (got, want) for key, got, want in fit.mismatched}
        parts = []
        for label, keys in (("missing", sorted(fit.missing)), ("unexpected", sorted(fit.unexpected)),
                            ("of another shape", sorted(shapes))):
            if keys:
                detail = ", ".join(
                    f"{k} {shapes[k][0]} vs {shapes[k][1]}" if k in shapes else k for k in keys[:5])
                parts.append(f"{len(keys)} {label}: {detail}{', ...' if len(keys) > 5 else ''}")
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model's architecture "
                              f"({'; '.join(parts)}); it was trained with another model config")


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def config_diff(old: Any, new: Any, path: str = "") -> list[tuple[str, str]]:
    """Where two plain configs differ: ``(dotted key, "key was X, now Y")`` for each changed leaf."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                diffs.append((sub, f"{sub} is new: {new[key]!r}"))
            elif key not in new:
                diffs.append((sub, f"{sub} was {old[key]!r}, now unset"))
            else:
                diffs.extend(config_diff(old[key], new[key], sub))
        return diffs
    if _canonical(old) != _canonical(new):
        return [(path, f"{path} was {old!r}, now {new!r}")]
    return []
