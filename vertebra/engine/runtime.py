"""The machinery around a training step: device choice, seeding, AMP, EMA and stop signals."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import warnings
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, VertebraError

__all__ = ["resolve_device", "seed_everything", "idle_cores", "autocast_context", "make_scaler", "make_ema",
           "StopSignal", "NonFiniteLossError"]


class NonFiniteLossError(VertebraError, FloatingPointError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local CUDA device when there is one, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N", path="device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but no CUDA device is available; use device=auto or cpu",
                              path="device")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N", path="device")
    return device


def idle_cores() -> int:
    """Cores not busy right now (cores minus the 1-minute load average), at least 1.

    On a shared machine, more intra-op threads than idle cores makes every step wait for the
    slowest, descheduled thread: measured here, a 2-thread Faster R-CNN step on 2 busy cores took
    3-14 s where 1 thread took ~1 s.  The quickstart uses this to pick its thread count.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):     # not available on every platform
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None when AMP is off (always off on CPU, with a warning if asked)."""
    if amp == "off":
        return None
    if device.type != "cuda":
        warnings.warn(f"amp={amp!r} is for CUDA; running in float32 on {device}", stacklevel=3)
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast_context(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is only enabled for float16 (bfloat16 has float32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def make_ema(model: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """Exponential moving average of parameters *and* buffers (BatchNorm statistics), updated per step."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step (then it checkpoints and exits).

    A second Ctrl-C while the flag is set interrupts at once (the default behaviour comes back).
    Outside the main thread (where Python cannot install handlers) it only offers the flag.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopSignal"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()
