"""Run a backbone as a frozen TorchScript trace that oneDNN Graph fuses (CPU, float32, inference).

Why: on CPU, eager PyTorch runs one kernel per op and writes every intermediate map to memory, and
early-stage maps are larger than the cache, so MBConv blocks are memory-bound.  oneDNN Graph (the
"LLGA" fuser behind ``torch.jit.enable_onednn_fusion``) compiles partitions of a frozen graph into
fused kernels: convolution + bias + activation and the residual add run inside the convolutions'
kernels, and a 1x1 expansion is fused with the 3x3 depthwise conv after it.  The squeeze-and-
excitation gate is not fused (oneDNN runs it as a broadcast multiply into a new buffer), so while
tracing, the SE modules whose input is a convolution's fresh output are swapped for
:class:`InPlaceSqueezeExcitation` and the trace gates in place (:func:`gates_in_place`).  This is
the largest of vertebra's CPU speed-ups, well ahead of the eager rewrites of
:mod:`vertebra.inference.optimize` and of ``torch.compile`` (benchmarks/README.md has the figures).

Choices, each for correctness first:

* **One graph per input signature** (shape, layout, weights): a trace records one path through the
  Python code, so a backbone with shape-dependent Python would be wrong for another shape.  A new
  shape costs one trace; the cache keeps the last four.  Inputs that cycle through more shapes than
  that would retrace on every call (an order of magnitude slower than eager), so after
  ``2 * max_graphs`` evictions the backbone goes back to eager, with a warning.
* **Weights are checked on every call** (every parameter's and buffer's storage and version counter),
  so loading new weights after ``optimize()`` (``load_state_dict``, in-place edits, ``.to()``) drops
  the cached graphs and retraces instead of running stale frozen constants.  The tensors are listed
  once (listing them per call costs far more than reading their counters): a Parameter *object* or
  submodule swapped in afterwards is not seen; optimize the edited model again instead.
* **A trace that warns is not used**: ``TracerWarning`` means the trace may depend on values; the
  backbone then stays eager (with one warning saying so).  So does a backbone that fails to trace.
* **The fusion switch is global in torch**, so it is turned on only around the graph's own calls and
  restored after.
* **Forward hooks run**: a graph would skip hooks registered on the backbone's submodules (or
  globally), so while any exist the backbone runs eagerly (checked per call; cheap).
* **The in-place gate is scoped**: the SE classes are swapped only for the trace and restored after,
  and even then gate in place only in the tracing thread, with autograd off.

TorchScript is deprecated in recent torch (its ``FutureWarning`` is silenced here, where we chose
it knowingly); where tracing is unavailable the backbone simply runs eagerly.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from .folding import context_value, observed

__all__ = ["InferenceGraph", "InPlaceSqueezeExcitation", "gates_in_place", "graph_available"]

_MAX_GRAPHS = 4
_GATES_IN_PLACE: ContextVar[bool] = ContextVar("vertebra_gates_in_place", default=False)


def graph_available() -> bool:
    """Whether this torch build can fuse traced graphs with oneDNN (CPU builds with mkldnn)."""
    return (torch.backends.mkldnn.is_available() and hasattr(torch.jit, "enable_onednn_fusion")
            and hasattr(torch.jit, "freeze"))


class InPlaceSqueezeExcitation(SqueezeExcitation):
    """torchvision's ``SqueezeExcitation`` (same parameters and state_dict) that a trace records gating in place.

    Why: out of place, oneDNN Graph runs the gate as a separate broadcast ``binary`` primitive that
    allocates and writes a second expanded map.  In place is safe only where the SE input is a fresh
    map that nothing else reads, which :func:`gates_in_place` checks before swapping a module's class
    to this one.  Outside that context (another thread, autograd on) it is torchvision's out-of-place
    ``scale * x``.
    """

    def forward(self, input: Tensor) -> Tensor:
        scale = self._scale(input)
        if _GATES_IN_PLACE.get() and not torch.is_grad_enabled():
            return input.mul_(scale)
        return scale * input


def _fresh_input_gates(backbone: nn.Module) -> list[SqueezeExcitation]:
    """torchvision SE modules right after a ``Conv2dNormActivation`` in an ``nn.Sequential``: their
    input is that convolution's fresh output, which nothing but the SE reads (vertebra's MBConv and
    MobileNetV3 blocks: the depthwise conv, then SE)."""
    gates = []
    for sequential in backbone.modules():
        if isinstance(sequential, nn.Sequential):
            children = list(sequential.children())
            gates.extend(gate for before, gate in zip(children, children[1:])
                         if type(gate) is SqueezeExcitation and isinstance(before, Conv2dNormActivation))
    return gates


@contextmanager
def gates_in_place(backbone: nn.Module) -> Iterator[None]:
    """Inside this context, in this thread and with autograd off, ``backbone``'s SE gates whose input
    is fresh (see :func:`_fresh_input_gates`) multiply in place; their classes are restored after."""
    gates = _fresh_input_gates(backbone)
    for gate in gates:
        gate.__class__ = InPlaceSqueezeExcitation  # behaviour only: no state of its own
    try:
        with context_value(_GATES_IN_PLACE, True):
            yield
    finally:
        for gate in gates:
            gate.__class__ = SqueezeExcitation


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
    """A backbone's cache of fused graphs; the optimized backbone's forward asks it first (see :meth:`__call__`).

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
                with torch.no_grad(), gates_in_place(backbone):  # see InPlaceSqueezeExcitation
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
