"""Measuring side by side: interleaved rounds, paired ratios, FLOPs, the matmul roofline, saved bytes.

Why interleaved and paired: this suite runs on shared, noisy machines.  Each round runs every
reference once and then our model once, back to back, so a burst of load hits all of them alike;
the ratio of a round (reference time / our time) cancels most of that burst, and the median of the
per-round ratios is the figure we record and gate on.  Absolute images/s are recorded too.

pytest-benchmark times our model (its table and JSON are ours); the references run in its
``setup`` callback, which it calls right before every round and does not time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["side_by_side", "count_flops", "matmul_peak_gflops", "synchronize", "SavedBytes",
           "parameter_count", "used_parameter_count"]


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer around a step measures the step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def used_parameter_count(model: nn.Module, inputs: Any) -> int:
    """Parameters of the modules that one forward on ``inputs`` actually runs (mode kept).

    timm's ``forward_features`` stops before the classifier (and MobileNetV3's ``conv_head``) its model
    still holds; counting what runs compares the timed architectures, not the objects.  The forward
    runs with autograd on, so no inference-only shortcut (vertebra's BatchNorm folding) skips a module.
    """
    ran: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda module, args, output: ran.append(module)) for m in model.modules()]
    try:
        with torch.enable_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    unique = {id(p): p for module in ran for p in module.parameters(recurse=False)}
    return sum(p.numel() for p in unique.values())


# Pause before every timed call.  OpenMP worker threads keep spinning for a while after a parallel
# region (libgomp, and the separate runtime a torch.compile'd model's kernels may use); on a small CPU
# they steal the cores of whatever runs next.  Measured here: vertebra.optimize(EfficientNet-B0) timed
# right after a compiled torchvision model came out 1.29x torchvision eager; 1.64-1.80x with no compiled
# model in the round, 1.82-1.85x with the compiled model and this pause.
SETTLE_S = 0.25


def side_by_side(benchmark: Any, ours: Callable[[], Any], references: Mapping[str, Callable[[], Any]], *,
                 rounds: int, warmup: int, images: int, gflop: float | None = None,
                 peak_gflops: float | None = None, peak_key: str | None = None, ours_name: str = "ours",
                 best_of: tuple[str, ...] = ()) -> dict[str, Any]:
    """Time ``ours`` with pytest-benchmark and every reference in the same rounds; fill ``extra_info``.

    ``extra_info`` gets ``images`` (per call), ``ours_ips`` (images/s, median round), and per
    reference ``{"ips", "ratio"}`` where ``ratio`` is the median over rounds of
    ``reference_time / our_time`` (> 1: we are faster).  ``ratio`` at the top level is the first
    reference's (the primary: torchvision where it has the model).  With ``gflop`` (per call) it
    adds achieved GFLOP/s and, with ``peak_gflops``, the fraction of the measured matmul peak
    (``peak_key`` names that roofline, so the final JSON can use the run's best measurement).
    With ``best_of`` (names of references that are also our paths), ``best`` is the fastest of
    ours (``ours_name``) and those against the primary: ``{"path", "ips", "ratio"}``, ratio the
    median over rounds of ``primary_time / that_path_time``.  Returns ``extra_info``.  With benchmarks disabled (CI's quick mode) everything runs once, untimed.
    """
    names = list(references)
    ref_times: dict[str, list[float]] = {name: [] for name in names}
    settle = SETTLE_S if not benchmark.disabled else 0.0

    def run_references() -> None:
        time.sleep(settle)
        for name in names:
            start = time.perf_counter()
            references[name]()
            ref_times[name].append(time.perf_counter() - start)
            time.sleep(settle)

    info = benchmark.extra_info
    info.update(images=images, references={}, primary=names[0] if names else None)
    if peak_key:
        info["peak_key"] = peak_key
    benchmark.pedantic(ours, setup=run_references, rounds=rounds, warmup_rounds=warmup, iterations=1)
    if benchmark.disabled or benchmark.stats is None:
        return info
    ours_times = list(benchmark.stats.stats.data)
    info["ours_ips"] = images / statistics.median(ours_times)
    for name in names:
        timed = ref_times[name][-len(ours_times):]  # drop the warm-up rounds
        ratios = [ref / own for ref, own in zip(timed, ours_times)]
        info["references"][name] = {"ips": images / statistics.median(timed), "ratio": statistics.median(ratios)}
    if names:
        info["ratio"] = info["references"][names[0]]["ratio"]
    if best_of and names:
        info["best"] = _best_path(ours_name, ours_times, ref_times, best_of, names[0], images)
    if gflop:
        info["gflop"] = gflop
        info["gflops"] = gflop * info["ours_ips"] / images
        if peak_gflops:
            info["peak_gflops"] = peak_gflops
            info["efficiency"] = info["gflops"] / peak_gflops
    return info


def _best_path(ours_name: str, ours_times: list[float], ref_times: Mapping[str, list[float]],
               best_of: tuple[str, ...], primary: str, images: int) -> dict[str, Any]:
    """The fastest of our paths (ours and the ``best_of`` references) against the primary, round by round."""
    rounds = len(ours_times)
    timed = {ours_name: ours_times, **{name: ref_times[name][-rounds:] for name in best_of}}
    reference = ref_times[primary][-rounds:]
    ratios = {name: statistics.median([ref / own for ref, own in zip(reference, times)])
              for name, times in timed.items()}
    path = max(ratios, key=ratios.get)
    return {"path": path, "ips": images / statistics.median(timed[path]), "ratio": ratios[path]}


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs (multiply and add counted separately) of one call, from torch's own FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak_gflops(device: torch.device, *, size: int = 2048, repeats: int = 5,
                       dtype: torch.dtype = torch.float32) -> float:
    """The dense float32 matmul rate this machine reaches now: the roofline no model beats.

    Best of ``repeats`` (the peak, not the typical rate: the point is an upper bound).
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class SavedBytes:
    """Bytes of activations a training step keeps for backward, counted as the step runs.

    Two kinds of storage stay alive between forward and backward: tensors autograd saves (counted
    with ``saved_tensors_hooks``, one count per distinct storage) and, under gradient checkpointing,
    the inputs each checkpointed segment keeps to recompute itself (counted with forward pre-hooks
    on the checkpointed modules, because checkpointing stores them outside autograd's saved tensors).
    Parameters are excluded: they exist with or without a training step.

    ``segments``: modules whose saved bytes are also attributed one by one (``by_segment``); with
    checkpointing, backward recomputes one segment at a time, so the largest segment's bytes on top of
    the checkpointed total bound what is alive at any moment of backward.
    """

    def __init__(self, model: nn.Module, checkpointed: list[nn.Module] = (), segments: list[nn.Module] = ()):
        self.model = model
        self.checkpointed = list(checkpointed)
        self.segments = list(segments)
        self.storages: dict[int, int] = {}
        self.by_segment: list[int] = [0] * len(self.segments)
        self._current: int | None = None
        self._parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def _add(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._parameters or key in self.storages:
            return
        self.storages[key] = storage.nbytes()
        if self._current is not None:
            self.by_segment[self._current] += storage.nbytes()

    def _record_inputs(self, module: nn.Module, args: tuple) -> None:
        for arg in args:
            self._add(arg)

    def _hooks(self) -> list:
        handles = [m.register_forward_pre_hook(self._record_inputs) for m in self.checkpointed]
        for index, segment in enumerate(self.segments):
            handles.append(segment.register_forward_pre_hook(lambda *_, i=index: setattr(self, "_current", i)))
            handles.append(segment.register_forward_hook(lambda *_: setattr(self, "_current", None)))
        return handles

    def measure(self, forward: Callable[[], torch.Tensor]) -> int:
        """Run ``forward`` (returning the loss) and return the bytes it left for backward."""
        self.storages.clear()
        self.by_segment = [0] * len(self.segments)
        handles = self._hooks()

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self._add(tensor)
            return tensor

        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss = forward()
        finally:
            for handle in handles:
                handle.remove()
        loss.backward()
        return sum(self.storages.values())
