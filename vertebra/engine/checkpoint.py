"""Training checkpoints: everything a run needs to continue bit-for-bit, written atomically.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``): model (and EMA)
state, optimizer, scheduler, GradScaler, the position (``epoch`` = epochs fully done,
``step_in_epoch`` = batches done inside the next one, ``global_step``), the RNG states of python,
numpy, torch and CUDA, the full training config, the model's registry config and the metrics
history (so the curves PNG still covers the whole run after ``--resume``).

Writes go through :func:`vertebra._io.save_atomic` (temporary file + fsync + rename): an
interrupted save leaves the previous checkpoint intact.  Reads go through
:func:`vertebra._io.load_checkpoint` (``weights_only=True``).  A checkpoint whose architecture
differs from the model being trained is refused with a :class:`CheckpointError` that names the
difference, before anything is loaded.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["FORMAT", "capture_rng", "restore_rng", "save_training_checkpoint",
           "load_training_checkpoint", "check_architecture", "unwrap"]

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


# -- save / load -----------------------------------------------------------------------------

def save_training_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (see module docstring) atomically; returns the path."""
    from .._io import save_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"format": FORMAT, **state}, path)
    return path


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (weights_only=True); refuse files that are not one."""
    from .._io import load_checkpoint

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
    buffer name and shape (catches hand-built models and edited configs alike).
    """
    model = unwrap(model)
    ours, theirs = getattr(model, "config", None), state.get("model_config")
    if ours is not None and theirs is not None and _canonical(ours) != _canonical(theirs):
        diffs = _config_diff(theirs, ours)
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for another architecture ({'; '.join(diffs[:6])}); "
            f"use the config it was trained with (stored in the checkpoint) or start a new run without --resume")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state["model"].items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
            if keys:
                detail = ", ".join(
                    f"{k} {found[k]} vs {expected[k]}" if keys is shapes else k for k in keys[:5])
                parts.append(f"{len(keys)} {label}: {detail}{', ...' if len(keys) > 5 else ''}")
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this model's architecture "
                              f"({'; '.join(parts)}); it was trained with another model config")


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _config_diff(old: Any, new: Any, path: str = "model") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}"
            if key not in old:
                diffs.append(f"{sub} is new: {new[key]!r}")
            elif key not in new:
                diffs.append(f"{sub} was {old[key]!r}, now unset")
            else:
                diffs.extend(_config_diff(old[key], new[key], sub))
        return diffs
    if _canonical(old) != _canonical(new):
        return [f"{path} was {old!r}, now {new!r}"]
    return []
