"""Running the graph an artifact embeds (the int8 OpenVINO IR of ``vertebra quantize``).

Such an artifact is predicted with on the runtime its graph was built for -- its float weights are
in it too, but running them would silently give float results under an int8 name, so asking for
another runtime is a :class:`~vertebra.errors.ConfigError` that names the right one.  The graph is
read from memory (nothing is unpacked to disk) and compiled once; its outputs come back in the
structure of the eager model's (:class:`~vertebra.deploy.runtimes.Runner`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ArtifactError, ConfigError, ExportError
from ..weights.artifact import Artifact, EmbeddedGraph
from .export import output_names, require
from .export import _save_openvino as save_openvino
from .openvino_engine import OpenVINOEngine, shared_core
from .runtimes import Runner

__all__ = ["embedded_runtime", "compile_embedded", "embedded_runner", "export_embedded"]


def embedded_runtime(artifact: Artifact, asked: str | None) -> str:
    """The runtime to predict ``artifact`` with: its graph's, which ``asked`` (when given) must be."""
    graph = artifact.graph
    if graph is None:
        return asked or "torch"
    if asked not in (None, graph.runtime):
        raise ConfigError(f"this artifact is a {graph.precision} model for {graph.runtime}; predict it with "
                          f"--runtime {graph.runtime} (or leave --runtime out), or use the float artifact it "
                          f"was made from for --runtime {asked}", path="runtime")
    return graph.runtime


def _read(graph: EmbeddedGraph) -> tuple[Any, Any]:
    """``(openvino, Model)`` of ``graph``, read from the artifact's bytes."""
    if graph.runtime != "openvino" or set(graph.files) != {"model.xml", "model.bin"}:
        raise ArtifactError(f"an embedded {graph.runtime} graph with files {sorted(graph.files)} is not one this "
                            "vertebra runs (it runs openvino model.xml + model.bin); upgrade vertebra")
    ov = require("openvino", f"a {graph.precision} OpenVINO artifact")
    # Read from files, not from the bytes: a model read from a Python buffer may keep pointing into
    # it, and the buffer's lifetime is then Python's to decide (seen: a segfault tests later).  A
    # file OpenVINO maps stays valid after its folder is removed.
    with tempfile.TemporaryDirectory(prefix="vertebra-graph-") as folder:
        for name, data in graph.files.items():
            (Path(folder) / name).write_bytes(data)
        return ov, shared_core().read_model(str(Path(folder) / "model.xml"))



def compile_embedded(graph: EmbeddedGraph) -> Any:
    """The compiled OpenVINO model of ``graph`` on the CPU.

    Layers left in float run in float32 (``INFERENCE_PRECISION_HINT=f32``, as every vertebra
    OpenVINO runner): the difference to the float model is then quantization's alone.
    """
    ov, model = _read(graph)
    return shared_core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def export_embedded(graph: EmbeddedGraph, fmt: str, path: Path) -> Path:
    """Write ``graph`` as ``fmt`` (its own runtime's format only: int8 does not convert between runtimes)."""
    if fmt != graph.runtime:
        raise ExportError(f"this artifact is a {graph.precision} {graph.runtime} model; it exports as "
                          f"--format {graph.runtime} only (export the float artifact it was made from for "
                          f"--format {fmt})")
    ov, model = _read(graph)
    return save_openvino(ov, model, path)


def embedded_runner(model: nn.Module, artifact: Artifact) -> Runner:
    """A :class:`Runner` over ``artifact``'s embedded graph (``model`` is its float model: output names)."""
    assert artifact.graph is not None
    _, graph_model = _read(artifact.graph)
    return Runner(OpenVINOEngine(graph_model), runtime=artifact.graph.runtime, task=artifact.task, path=None,
                  names=output_names(model))
