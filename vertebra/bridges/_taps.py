"""Finding a classification model's feature levels from one forward on the ``meta`` device.

A torchvision classifier does not say where its stages end, but running it tells: every module's
output shape, in the order modules finish.  On an odd ``H x W`` input with ``H != W`` (so a
transposed map shows), a module whose output is ``(N, C, ceil(H/s), ceil(W/s))`` is at stride ``s``;
``floor`` sizes count too but mark the tap ``floored`` (a patchify stem, ConvNeXt's and Swin's: the
backbone then pads its input); Swin's stages are ``(N, H/s, W/s, C)`` and are recorded as
channels-last.  The level at stride ``s`` is the
*last* module to finish at that stride that runs exactly once (a shared activation called twice is
no stage end) and is not inside a block that ends at another stride: the outermost module of the
stage, the one ``create_feature_extractor`` can name.

Meta tensors carry shapes only, so this costs no memory and next to no time, whatever the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Tap", "Event", "find_taps", "finish_order", "PROBE_SIZE"]

PROBE_SIZE = (225, 289)  # odd, unequal, ceil and floor differ at every stride 2..32
LEVEL_STRIDES = (2, 4, 8, 16, 32)
Event = tuple[str, tuple[int, ...], int, tuple[int, ...]]  # path, output shape, calls, input shape


@dataclass(frozen=True)
class Tap:
    """The module producing one level, with its paper (undilated) stride and channels."""

    path: str
    stride: int
    channels: int
    channels_last: bool = False
    floored: bool = False


def _stride_of(shape: tuple[int, ...], height: int, width: int,
               also: tuple[int, ...] = ()) -> tuple[int, int, bool, bool] | None:
    """``(stride, channels, channels_last, floored)`` of a 4-D shape (strides 2..32 and ``also``), or ``None``."""
    if len(shape) != 4:
        return None
    for stride in (*also, *LEVEL_STRIDES):
        for rounding, floored in ((math.ceil, False), (math.floor, True)):
            size = (rounding(height / stride), rounding(width / stride))
            if tuple(shape[2:]) == size:
                return stride, int(shape[1]), False, floored
            if tuple(shape[1:3]) == size:
                return stride, int(shape[3]), True, floored
    return None


def finish_order(model: nn.Module, size: tuple[int, int] = PROBE_SIZE) -> list[Event]:
    """``(module path, output shape, how often it ran, input shape)`` for every module call of one meta
    forward, in finishing order.

    ``model`` must be on the ``meta`` device; it is run in eval mode (no auxiliary heads).
    """
    events: list[Event] = []
    calls: dict[str, int] = {}
    handles = []

    def record(path: str):
        def hook(_module, inputs, output):
            calls[path] = calls.get(path, 0) + 1
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            first = inputs[0] if inputs else None
            events.append((path, shape, calls[path], tuple(first.shape) if isinstance(first, torch.Tensor) else ()))
        return hook

    for path, module in model.named_modules():
        if path:
            handles.append(module.register_forward_hook(record(path)))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty(1, 3, *size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return [(path, shape, calls[path], entered) for path, shape, _, entered in events]


def find_taps(events: list[Event], size: tuple[int, int] = PROBE_SIZE) -> list[Tap]:
    """One :class:`Tap` per stride in 2..32 the model has, shallow to deep (see the module doc)."""
    entered_at = {path: found[0] for path, _, _, shape in events if (found := _stride_of(shape, *size, (1,)))}
    ended_at = {path: found[0] for path, shape, _, _ in events if (found := _stride_of(shape, *size))}
    last: dict[int, Tap] = {}
    for path, shape, calls, _ in events:
        found = _stride_of(shape, *size)
        if found is None or calls != 1 or _inside_a_strided_block(path, found[0], entered_at, ended_at):
            continue
        stride, channels, channels_last, floored = found
        if last and stride < max(last):
            continue  # a stride-2 map after the stride-8 ones is a side branch, not a stage end
        last[stride] = Tap(path, stride, channels, channels_last, floored)
    return [last[stride] for stride in sorted(last)]


def _inside_a_strided_block(path: str, stride: int, entered_at: dict[str, int], ended_at: dict[str, int]) -> bool:
    """Whether ``path`` lies inside a block that takes a map at its stride and returns another stride:
    it is then the inside of the next stage's first block (MobileNet's expansion convolution), not
    the end of a stage.  A container of several stages (``features``) takes the image, not such a map."""
    parts = path.split(".")
    for depth in range(1, len(parts)):
        block = ".".join(parts[:depth])
        if entered_at.get(block) == stride and ended_at.get(block, stride) != stride:
            return True
    return False
