"""Run a backbone as a frozen TorchScript trace that oneDNN Graph fuses (CPU, float32, inference).

Why: on CPU, eager PyTorch runs one kernel per op and writes every intermediate map to memory, and
early-stage maps are larger than the cache, so MBConv blocks are memory-bound.  oneDNN Graph (the
"LLGA" fuser behind ``torch.jit.enable_onednn_fusion``) compiles partitions of a frozen graph into
fused kernels: convolution + bias + activation and the residual add run inside the convolutions'
kernels, and a 1x1 expansion is fused with the 3x3 depthwise conv after it.  The squeeze-and-
excitation gate is not fused (oneDNN runs it as a broadcast multiply into a new buffer), so
vertebra's own SE blocks are traced gating in place: their input is a fresh depthwise output that
nothing else reads (:class:`~vertebra.backbones._blocks.BlockSqueezeExcitation`).  Measured on
EfficientNet-B0, batch 8, 224 px, 2 threads (``benchmarks/test_throughput.py::test_optimized_inference``):
1.50x torchvision's eager model with allocator page faults removed, 1.56x with glibc's defaults
(MobileNetV3-Large 1.77x and 1.61x), where the eager rewrites of ``_optimize.py`` reach 1.0-1.25x
and ``torch.compile`` (with or without inductor's freezing) about 1.1x.

Choices, each for correctness first:

* **One graph per input signature** (shape, layout, weights): a trace records one path through the
  Python code, so a backbone with shape-dependent Python would be wrong for another shape.  A new
  shape costs one trace (about a second for EfficientNet-B0); the cache keeps the last four.  Inputs
  that cycle through more shapes than that would retrace on every call (seen: 0.6 s instead of 60 ms
  per batch), so after ``2 * max_graphs`` evictions the backbone goes back to eager, with a warning.
* **Weights are checked on every call** (every parameter's and buffer's storage and version counter),
  so loading new weights after ``optimize()`` (``load_state_dict``, in-place edits, ``.to()``) drops
  the cached graphs and retraces instead of running stale frozen constants.  The tensors are listed
  once (listing them per call would cost 1.4 ms on EfficientNet-B0; reading their counters costs
  60 us): a Parameter *object* or submodule swapped in afterwards is not seen; optimize the edited
  model again instead.
* **A trace that warns is not used**: ``TracerWarning`` means the trace may depend on values; the
  backbone then stays eager (with one warning saying so).  So does a backbone that fails to trace.
* **The fusion switch is global in torch**, so it is turned on only around the graph's own calls and
  restored after.
* **Forward hooks run**: a graph would skip hooks registered on the backbone's submodules (or
  globally), so while any exist the backbone runs eagerly (checked per call, 30 us on EfficientNet-B0).

TorchScript is deprecated in recent torch (its ``FutureWarning`` is silenced here, where we chose
it knowingly); where tracing is unavailable the backbone simply runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .backbones._blocks import gates_in_place
from .backbones._folding import observed

__all__ = ["InferenceGraph", "graph_available"]

_MAX_GRAPHS = 4


def graph_available() -> bool:
    """Whether this torch build can fuse traced graphs with oneDNN (CPU builds with mkldnn)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.jit, "enable_onednn_fusion")
            and hasattr(torch.jit, "freeze"))


@contextmanager
def _onednn_fusion() -> Iterator[None]:
    previous = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(previous)


def _weights_key(tensors: list[Tensor]) -> tuple:
    """Storage and version counter of each tensor: changes when weights are loaded, edited or moved."""
    try:
        return tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)
    except RuntimeError:  # inference tensors have no version counter; their storage still counts
        return tuple(tensor.data_ptr() for tensor in tensors)


class InferenceGraph:
    """A backbone's cache of fused graphs; ``Backbone.forward`` asks it first (see :meth:`__call__`).

    Not an ``nn.Module`` on purpose: it holds no weights of its own (the frozen graphs are a cache), so
    it never appears in ``state_dict()``, ``modules()`` or a copy.
    """

    def __init__(self, max_graphs: int = _MAX_GRAPHS):
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, torch.jit.ScriptModule] = OrderedDict()
        self._weights: list[Tensor] | None = None
        self._submodules: list[nn.Module] = []
        self._weights_seen: tuple | None = None
        self._evictions = 0
        self.disabled_because: str | None = None

    def __call__(self, backbone: nn.Module, x: Tensor) -> "OrderedDict[str, Tensor] | None":
        """The backbone's output computed by a fused graph, or None where the eager forward must run."""
        if not self._applies(x):
            return None
        if self._weights is None:
            self._weights = [*backbone.parameters(), *backbone.buffers()]
            self._submodules = [m for m in backbone.modules() if m is not backbone]
        if self._hooked():
            return None
        weights = _weights_key(self._weights)
        if weights != self._weights_seen:  # every cached graph holds the old weights: all are stale
            self._graphs.clear()
            self._weights_seen = weights
        key = (tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last))
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._trace(backbone, x)
            if graph is None:
                return None
            self._graphs[key] = graph
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
                self._evictions += 1
            if self._evictions >= 2 * self.max_graphs:
                self._disable(f"input shapes change too often ({self._evictions} cached graphs evicted); pad "
                              f"or resize inputs to at most {self.max_graphs} sizes to use fused graphs")
        else:
            self._graphs.move_to_end(key)
        with _onednn_fusion():
            return OrderedDict(graph(x))

    def _applies(self, x: Tensor) -> bool:
        return (self.disabled_because is None and x.device.type == "cpu" and x.dtype == torch.float32
                and not x.requires_grad and not torch.jit.is_tracing() and not torch.jit.is_scripting()
                and not torch.compiler.is_compiling())

    def _hooked(self) -> bool:
        """Whether a forward hook would run inside the backbone: a graph would skip it, so run eagerly."""
        return observed(*self._submodules)

    def _trace(self, backbone: nn.Module, x: Tensor) -> torch.jit.ScriptModule | None:
        failure = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch.no_grad(), gates_in_place():  # vertebra's SE blocks: see BlockSqueezeExcitation
                    traced = torch.jit.trace(backbone, x, strict=False, check_trace=False)
                    graph = torch.jit.freeze(traced.eval())
            except Exception as error:  # noqa: BLE001 - any failure means: stay eager, say why
                failure = f"tracing failed ({type(error).__name__}: {error})"
        tracer_warnings = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        if failure is None and tracer_warnings:
            failure = f"its trace may depend on values ({tracer_warnings[0].message})"
        if failure is not None:
            return self._disable(failure)
        for other in caught:
            if not issubclass(other.category, FutureWarning):  # torch.jit's own deprecation notices
                warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
        return graph

    def _disable(self, reason: str) -> None:
        self.disabled_because = reason
        self.clear()
        warnings.warn(f"vertebra.optimize: this backbone runs eagerly, not as a fused graph: {reason}",
                      RuntimeWarning, stacklevel=4)
        return None

    def clear(self) -> None:
        """Drop every cached graph and re-list the weights (after swapping modules or Parameter objects)."""
        self._graphs.clear()
        self._weights = self._weights_seen = None
        self._submodules = []

    def __len__(self) -> int:
        return len(self._graphs)

    def __deepcopy__(self, memo: dict) -> "InferenceGraph":
        # A copy gets its own empty cache: frozen graphs hold the original's weights as constants.
        copied = InferenceGraph(self.max_graphs)
        copied.disabled_because = self.disabled_because
        return copied

    def __getstate__(self) -> dict:
        return {"max_graphs": self.max_graphs, "_graphs": OrderedDict(), "_weights": None, "_weights_seen": None,
                "_submodules": [], "_evictions": 0, "disabled_because": self.disabled_because}
