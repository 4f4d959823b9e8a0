"""One OpenVINO model run fast on the CPU, in full float32: the engine behind every vertebra OpenVINO path.

``vertebra.optimize(model, backend="openvino")`` and ``make_runner(model, "openvino")`` (so
``vertebra predict --runtime openvino``) both run their model through an :class:`OpenVINOEngine`.
What it does that a plain ``compiled_model(array)`` does not, and why:

* **float32**: ``INFERENCE_PRECISION_HINT=f32``.  On CPUs with AMX or AVX-512 BF16 OpenVINO's
  default is bfloat16, which moves outputs by about 1e-2 and reorders detections.
* **a static model per recurring input shape**: the source model takes any height and width; a
  copy reshaped to one concrete shape lets OpenVINO fold the shape arithmetic and pick kernels for
  that shape.  A shape is compiled on its second call (the first runs the dynamic model), so a folder
  of images of a hundred sizes never compiles a hundred models; at most :data:`MAX_STATIC_SHAPES`
  are kept, least recently used first out.
* **a batch split over the cores**: a batch that divides evenly over the cores runs as that many
  chunks on as many streams (``THROUGHPUT``), each chunk on its own core, writing its rows of the
  outputs; small convolutions scale poorly over threads, so this beats one stream on the whole batch.
* **no copies**: inputs are handed over as views of the caller's tensors (``share_inputs``), and a
  static model writes its outputs straight into fresh torch tensors bound as its output tensors.
  The caller owns every tensor it gets back: the next call never overwrites them.
* **images of a batch concurrently** (:meth:`OpenVINOEngine.run_each`, for graphs that take one
  image, the detectors): a second compiled model with the ``THROUGHPUT`` hint (several streams,
  each on its own cores) behind an ``AsyncInferQueue``, so a batch's images run side by side
  instead of one after another.  A single image still runs on the latency model, all cores on it.

An engine is safe to call from several threads (one call at a time runs; OpenVINO's requests are
not reentrant).
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ExportError
from .export import require

__all__ = ["OpenVINOEngine", "MAX_STATIC_SHAPES", "FLOAT32", "shared_core"]

FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}
MAX_STATIC_SHAPES = 4
_STATIC_AFTER = 2                      # calls with one shape before it gets its own static model
_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64,
                 np.dtype(np.int32): torch.int32, np.dtype(np.float64): torch.float64,
                 np.dtype(np.bool_): torch.bool, np.dtype(np.uint8): torch.uint8}


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def shared_core() -> Any:
    """The process's one ``openvino.Core``: every vertebra path reads and compiles models with it.

    A model read by one Core and compiled by another, after the first was gone, crashed the process
    later (a segfault in unrelated code, tests/engine then tests/test_docs); OpenVINO recommends one
    Core per process anyway (it holds the plugins and their thread pools).
    """
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = require("openvino", "OpenVINO").Core()
        return _CORE


class _Compiled:
    """A compiled model and its requests.  Where every output has a static shape and a dtype torch has,
    the outputs are written into fresh torch tensors bound to the requests (no copy); otherwise (a
    detector's detection count) they are copied out of the request's own buffers.  With ``chunks``
    > 1 the model was compiled for ``1 / chunks`` of the batch: each chunk runs on its own stream and
    writes its rows of the outputs (dense outputs are batch-first)."""

    def __init__(self, ov: Any, compiled: Any, chunks: int = 1):
        self._ov, self.chunks = ov, chunks
        self.requests = [compiled.create_infer_request() for _ in range(chunks)]
        self.outputs: list[tuple[tuple[int, ...], torch.dtype]] | None = []
        for port in compiled.outputs:
            dtype = _TORCH_DTYPES.get(np.dtype(port.get_element_type().to_dtype()))
            shape = port.get_partial_shape()
            if dtype is None or not shape.is_static:
                self.outputs = None
                break
            self.outputs.append((tuple(shape.to_shape()), dtype))

    def __call__(self, array: np.ndarray) -> list[Tensor]:
        if self.outputs is None:
            request = self.requests[0]
            result = request.infer({0: array}, share_inputs=True)  # outputs copied (share_outputs off)
            return [torch.from_numpy(result[port]) for port in request.model_outputs]
        rows = array.shape[0] // self.chunks
        results = [torch.empty((shape[0] * self.chunks, *shape[1:]), dtype=dtype) for shape, dtype in self.outputs]
        for chunk, request in enumerate(self.requests):
            for index, result in enumerate(results):
                part = result[chunk * rows: (chunk + 1) * rows]  # contiguous: a block of leading rows
                request.set_output_tensor(index, self._ov.Tensor(part.numpy(), shared_memory=True))
            request.start_async({0: array[chunk * rows: (chunk + 1) * rows]}, share_inputs=True)
        for request in self.requests:
            request.wait()
        return results


class OpenVINOEngine:
    """Run ``model`` (an ``openvino.Model`` with one input) on CPU in float32; see the module docstring.

    ``engine(x)`` takes a float32 ``Tensor`` and returns the model's outputs as tensors, in the
    model's output order.  ``engine.run_each(images)`` runs a one-image graph on every image of a
    list concurrently and returns one output list per image.
    """

    def __init__(self, model: Any, *, static_shapes: bool = True):
        self._ov = require("openvino", "the OpenVINO backend")
        if len(model.inputs) != 1:
            raise ExportError(f"the OpenVINO engine runs models with one input, this one has {len(model.inputs)}")
        self.model = model
        self.static_shapes = static_shapes
        self._core = shared_core()
        self._lock = threading.Lock()
        self._dynamic: Any = None
        self._static: OrderedDict[tuple[int, ...], _Compiled | None] = OrderedDict()
        self._calls: Counter[tuple[int, ...]] = Counter()
        self._queue: Any = None
        self._queued: dict[int, list[Tensor]] = {}

    # -- one input, all cores ---------------------------------------------------------------------
    def __call__(self, x: Tensor) -> list[Tensor]:
        array = _as_array(x)
        with self._lock:
            compiled = self._static_for(array.shape)
            if compiled is None:
                if self._dynamic is None:
                    self._dynamic = _Compiled(self._ov, self._compile(self.model, "LATENCY"))
                compiled = self._dynamic
            return compiled(array)

    def _static_for(self, shape: tuple[int, ...]) -> _Compiled | None:
        """The static model of ``shape``: kept, compiled now (its second call), or None (dynamic)."""
        if not self.static_shapes:
            return None
        if shape in self._static:
            self._static.move_to_end(shape)
            return self._static[shape]
        self._calls[shape] += 1
        if self._calls[shape] < _STATIC_AFTER:
            return None
        self._static[shape] = self._compile_static(shape)
        del self._calls[shape]
        while len(self._static) > MAX_STATIC_SHAPES:
            self._static.popitem(last=False)
        return self._static[shape]

    def _compile_static(self, shape: tuple[int, ...]) -> _Compiled | None:
        """A copy of the model reshaped to ``shape``, compiled; None (the dynamic model runs that shape)
        where the model refuses the reshape.  A batch that splits evenly over the cores is compiled
        per chunk, one stream per chunk (see :func:`_chunks`)."""
        chunks = _chunks(shape[0])
        try:
            if chunks > 1:
                compiled = self._compile_shape((shape[0] // chunks, *shape[1:]), "THROUGHPUT", chunks)
                result = _Compiled(self._ov, compiled, chunks)
                if result.outputs is not None and all(s[0] == shape[0] // chunks for s, _ in result.outputs):
                    return result
            return _Compiled(self._ov, self._compile_shape(shape, "LATENCY"))
        except RuntimeError:  # what OpenVINO raises for a shape its shape inference rejects
            return None

    def _compile_shape(self, shape: tuple[int, ...], hint: str, streams: int | None = None) -> Any:
        model = self.model.clone()
        model.reshape({model.inputs[0]: self._ov.PartialShape(list(shape))})
        return self._compile(model, hint, streams)

    def _compile(self, model: Any, hint: str, streams: int | None = None) -> Any:
        config = {**FLOAT32, "PERFORMANCE_HINT": hint, **({"NUM_STREAMS": str(streams)} if streams else {})}
        return self._core.compile_model(model, "CPU", config)

    # -- one image per call, images concurrently --------------------------------------------------
    def run_each(self, images: Sequence[Tensor]) -> list[list[Tensor]]:
        """``[engine(image) for image in images]``, the images running concurrently when there are several."""
        if len(images) < 2:
            return [self(image) for image in images]
        arrays = [_as_array(image) for image in images]
        with self._lock:
            queue = self._throughput_queue()
            self._queued = {}
            for index, array in enumerate(arrays):
                queue.start_async({0: array}, userdata=index, share_inputs=True)
            queue.wait_all()
            results, self._queued = self._queued, {}
        return [results[index] for index in range(len(arrays))]

    def _throughput_queue(self) -> Any:
        if self._queue is None:
            compiled = self._compile(self.model, "THROUGHPUT")
            jobs = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = self._ov.AsyncInferQueue(compiled, max(jobs, 1))
            self._queue.set_callback(self._collect)
        return self._queue

    def _collect(self, request: Any, index: int) -> None:
        # Copies: the request's output tensors are reused by the next image it runs.
        self._queued[index] = [torch.from_numpy(request.get_output_tensor(i).data.copy())
                               for i in range(len(request.model_outputs))]


def _chunks(batch: int) -> int:
    """How many streams a batch of ``batch`` runs on: one per core when the batch divides evenly, else 1.

    Small convolutions scale poorly over threads: on 2 cores, two streams of one thread on half a
    batch each beat one stream of two threads on the whole batch (``docs/performance.md``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    chunks = min(batch, cores)
    return chunks if chunks > 1 and batch % chunks == 0 else 1


def _as_array(x: Tensor) -> np.ndarray:
    """A C-contiguous float32 array sharing ``x``'s memory where it can (a copy only to fix layout or dtype)."""
    if not isinstance(x, Tensor):
        raise ExportError(f"the OpenVINO engine takes a Tensor, got {type(x).__name__}")
    return x.detach().to("cpu", torch.float32).contiguous().numpy()
