"""Dilation for models that were not written for it: strided convolutions become dilated ones.

The rule of DeepLab (and smp's ``make_dilated``): every stage whose paper stride exceeds the output
stride keeps the resolution of the stage before it.  Its strided convolutions get stride 1 and
every convolution in it with a kernel larger than one is dilated by ``stage stride / output stride``,
with the padding that keeps the map size (``dilation * (kernel - 1) / 2``).  The receptive field is
unchanged; the maps stay larger.

A stage strided by anything else (a pooling layer, Swin's patch merging) cannot be dilated this
way; :func:`dilate` says which layer, and the caller refuses the output stride with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["stage_modules", "dilate"]


def stage_modules(events: Sequence[tuple], ends: Sequence[str]) -> list[list[str]]:
    """The module paths that finish within each stage: after the previous level's module, up to its own.

    ``events`` is :func:`~._taps.finish_order`'s record; ``ends`` the module producing each level.
    """
    order = [event[0] for event in events]
    stages, start = [], 0
    for end in ends:
        stop = max(i for i, path in enumerate(order) if path == end) + 1
        stages.append(order[start:stop])
        start = stop
    return stages


def dilate(model: nn.Module, stage: Sequence[str], rate: int) -> str | None:
    """Turn the stride of the layers in ``stage`` (module paths) into dilation ``rate``, in place.

    Returns why the stage cannot be dilated (a strided layer that is no convolution, or a kernel
    that cannot be padded symmetrically), else ``None``.
    """
    modules = dict(model.named_modules())
    for path in stage:
        module = modules[path]
        if isinstance(module, nn.Conv2d):
            problem = _dilate_conv(module, rate)
            if problem:
                return f"{path}: {problem}"
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and _pair(module.stride) != (1, 1):
            return f"{path} is a strided {type(module).__name__}, not a convolution"
    return None


def _dilate_conv(conv: nn.Conv2d, rate: int) -> str | None:
    kernel = _pair(conv.kernel_size)
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r} is fixed when the layer is made, not after"
    if any(k > 1 and rate * (k - 1) % 2 for k in kernel):
        return f"kernel {kernel} cannot be padded symmetrically at dilation {rate}"
    conv.stride = (1, 1)
    if max(kernel) > 1:
        conv.dilation = tuple(rate if k > 1 else 1 for k in kernel)
        conv.padding = tuple(rate * (k - 1) // 2 for k in kernel)
    return None


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
