"""Running a backbone on a ``meta`` input to check that ``forward`` produces what ``feature_info`` declares.

A head is wired from ``feature_info`` alone (channels of its convolutions, which levels to tap), so a
backbone whose ``forward`` disagrees builds fine and fails at the first forward, far from the cause.
The registry already builds the backbone on the ``meta`` device to check the head's requirements;
running that module on a meta input is nearly free (meta tensors carry shapes, no data), so the
declared levels are compared with the produced ones before any real weights exist.

The input is ``2·S × 3·S`` for the deepest declared stride ``S``: valid for vertebra backbones
(their ``_check_input`` wants at least the output stride on each side), a whole number of cells at
every level, and not square, so swapped height and width show.  A module that cannot run on meta
(or refuses that input) is not judged here: the head's own use will tell.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["feature_mismatch", "compare_levels"]


def feature_mismatch(name: str, module: Any) -> str | None:
    """Why ``module``'s meta forward disagrees with its ``feature_info`` (the fix included); ``None``: it agrees."""
    try:
        declared = [(str(s.name), int(s.channels), int(s.stride)) for s in module.feature_info]
    except Exception:  # noqa: BLE001 - no or malformed feature_info: the requirements check reports that
        return None
    if not declared:
        return None
    import torch

    deepest = max(stride for _, _, stride in declared)
    height, width = 2 * deepest, 3 * deepest
    x = torch.empty(1, int(getattr(module, "in_channels", 3)), height, width, device="meta")
    training = getattr(module, "training", False)
    try:
        module.train(False)
        with torch.no_grad():
            out = module(x)
    except Exception:  # noqa: BLE001 - cannot run on meta: not something this check can judge
        return None
    finally:
        module.train(training)
    problem = compare_levels(declared, out, height, width)
    if problem is None:
        return None
    return (f"backbone {name!r} does not produce what its feature_info declares (checked on the meta device "
            f"with a {height}x{width} input): {problem}; fix the backbone's feature_info or its forward so they "
            f"agree (a level of stride s is ceil(H/s) x ceil(W/s))")


def compare_levels(declared: list[tuple[str, int, int]], out: Any, height: int, width: int) -> str | None:
    """Why ``out`` (a forward's result for a ``height x width`` input) is not the ``(name, channels, stride)``
    levels ``declared``: the first difference, naming the level and both values; ``None``: it is."""
    names = [n for n, _, _ in declared]
    if not isinstance(out, Mapping):
        return f"forward returned a {type(out).__name__}, not a mapping of the levels {names}"
    if list(out) != names:
        return f"feature_info declares the levels {names} (in this order), forward produced {list(out)}"
    for level, channels, stride in declared:
        tensor = out[level]
        shape = tuple(getattr(tensor, "shape", ()))
        if len(shape) != 4:
            return f"level {level!r} is a {type(tensor).__name__} of shape {shape}, not an (N, C, H, W) tensor"
        size = (math.ceil(height / stride), math.ceil(width / stride))
        if shape[1] != channels:
            return (f"level {level!r}: feature_info declares {channels} channels, forward produced "
                    f"{shape[1]} channels")
        if shape[2:] != size:
            return (f"level {level!r}: feature_info declares stride {stride} (a {size[0]}x{size[1]} map), "
                    f"forward produced {shape[2]}x{shape[3]}")
    return None
