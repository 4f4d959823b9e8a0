"""What an int8 model really runs in int8, counted from the runtime's own compiled graph.

A quantization flow can succeed and quantize nothing (a pattern the quantizer does not match, a
runtime that falls back to float kernels), and the model then looks fine: its outputs equal the
float model's.  So the count comes from the compiled model -- OpenVINO's runtime graph records
each executed layer's ``runtimePrecision`` -- not from the quantizer's intentions, and
:func:`quantize` refuses a model with none.

Counted layers are the ones that carry the arithmetic: convolutions (depthwise included),
fully-connected layers and matrix multiplications.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["WEIGHTED_LAYERS", "OpCount", "count_runtime_ops", "count_weighted_modules", "cosine_similarity"]

WEIGHTED_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")
_INT8 = ("i8", "u8")


@dataclass(frozen=True)
class OpCount:
    """Weighted layers of a compiled model by precision: ``int8`` and ``float`` (each ``{layer type: n}``)."""

    int8: dict[str, int]
    float: dict[str, int]

    @property
    def int8_total(self) -> int:
        return sum(self.int8.values())

    @property
    def float_total(self) -> int:
        return sum(self.float.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "int8_total": self.int8_total, "float_total": self.float_total}


def count_runtime_ops(compiled: Any) -> OpCount:
    """Count the weighted layers of an OpenVINO ``CompiledModel`` by the precision they execute in."""
    int8: Counter[str] = Counter()
    other: Counter[str] = Counter()
    runtime = compiled.get_runtime_model()
    layers = []
    for op in runtime.get_ops():
        info = op.get_rt_info()
        layers.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str)))
        del info
    # The runtime model points into the compiled one: release it (and its ops) while ``compiled`` is
    # certainly alive -- freed the other way round, OpenVINO writes into freed memory (seen as a
    # segfault much later in the process).
    del op, runtime
    for layer, precision in layers:
        if layer in WEIGHTED_LAYERS:
            (int8 if precision in _INT8 else other)[layer] += 1
    return OpCount(dict(int8), dict(other))


def count_weighted_modules(model: nn.Module) -> int:
    """Convolutions and linear layers of a torch model: the most that can run in int8."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)) for m in model.modules())


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two outputs, flattened (1.0: the same direction)."""
    a, b = a.double().flatten(), b.double().flatten()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))
