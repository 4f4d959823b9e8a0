"""Run an exported model in torch (``.pt2``), ONNX Runtime or OpenVINO, with the eager model's outputs.

``make_runner(model, runtime, workdir, task=...)`` exports ``model`` once into ``workdir`` (cached
by a fingerprint of its config and weights, so a changed model is re-exported) and returns a
:class:`Runner`: ``runner(batch)`` takes ``Tensor[N, 3, H, W]`` and returns what the eval model
returns for it, so callers need not know which runtime ran:

* classification: logits ``Tensor[N, C]``;
* semantic: ``{"out": Tensor[N, C, H, W]}`` (the main output only; ``aux`` is a training aid);
* detection / instance: a list of ``{"boxes", "scores", "labels"[, "masks"]}``, one per image (the
  exported graph takes one image; the runner calls it per image, so images may differ in size; the
  OpenVINO runner runs a batch's images concurrently).

OpenVINO runs through :class:`~.openvino_engine.OpenVINOEngine`, the engine of
``vertebra.optimize(model, backend="openvino")`` too: full float32, a static model per recurring input
shape, no copies, and a detector batch's images run concurrently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ExportError
from .detection import check_not_one_stage, is_detector
from .export import SUFFIXES, export_model, output_names, require, trace

__all__ = ["RUNTIMES", "Runner", "make_runner", "fingerprint"]

RUNTIMES = ("torch", "onnxruntime", "openvino")
_FORMAT_OF = {"torch": "pt2", "onnxruntime": "onnx", "openvino": "openvino"}
_TASKS = ("classification", "semantic", "detection", "instance")


class Runner:
    """A callable over an exported model; ``path`` is the file it runs, ``runtime`` where."""

    def __init__(self, run: Callable[[Tensor], list[Tensor]], *, runtime: str, task: str, path: Path,
                 names: Sequence[str]):
        self._run, self.runtime, self.task, self.path, self.names = run, runtime, task, path, list(names)
        # One-image graphs (detectors): the OpenVINO engine runs a batch's images concurrently.
        self._run_each = getattr(run, "run_each", None) or (lambda images: [run(image) for image in images])

    def __call__(self, batch: Tensor | Sequence[Tensor]) -> Any:
        if self.task in ("detection", "instance"):
            images = [image[None].float().contiguous() for image in batch]
            return [dict(zip(self.names, outputs)) for outputs in self._run_each(images)]
        if not isinstance(batch, Tensor) or batch.ndim != 4:
            raise ExportError(f"a {self.task} runner takes a Tensor[N, 3, H, W], got "
                              f"{type(batch).__name__}{tuple(getattr(batch, 'shape', ()))}")
        (out,) = self._run(batch.float().contiguous())
        return out if self.task == "classification" else {"out": out}

    def __repr__(self) -> str:
        return f"Runner(runtime={self.runtime!r}, task={self.task!r}, path={str(self.path)!r})"


def fingerprint(model: nn.Module) -> str:
    """A short hash of ``model``'s config, plain settings and tensors: the cache key of its exports.

    The settings are the modules' plain attributes (a detector's ``roi_heads.score_thresh``, its
    transform's ``min_size`` ...): they are baked into the exported graph, and a user may change
    them after building, where neither the config nor the state_dict sees it.
    """
    digest = hashlib.sha256(json.dumps(getattr(model, "config", None), sort_keys=True, default=str).encode())
    digest.update(json.dumps(_plain_settings(model), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _plain_settings(model: nn.Module) -> dict[str, Any]:
    """Every module's public JSON-plain attributes (not ``training``: exports are made in eval mode)."""
    settings: dict[str, Any] = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if key.startswith("_") or key == "training" or callable(value):
                continue
            try:
                settings[f"{prefix}.{key}"] = json.loads(json.dumps(value))
            except (TypeError, ValueError):
                continue                  # an object (a module list, a tensor helper): not a setting
    return settings


def make_runner(model: nn.Module, runtime: Any, workdir: Any = None, *rest: Any, task: str | None = None,
                example_size: tuple[int, int] = (96, 96)) -> Runner:
    """Export ``model`` (eval mode) for ``runtime`` into ``workdir`` (cached) and return its :class:`Runner`.

    ``task`` is one of classification, semantic, detection, instance (inferred from the model when
    ``None``).  Also accepts ``make_runner(model, artifact, runtime, workdir)`` (the artifact gives
    the task), the form :mod:`vertebra.deploy.predict` uses.
    """
    if not isinstance(runtime, str) and hasattr(runtime, "task"):  # (model, artifact, runtime, workdir)
        task = task or runtime.task
        runtime, workdir = workdir, (rest[0] if rest else None)
    if runtime not in RUNTIMES:
        raise ExportError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if workdir is None:
        raise ExportError("make_runner needs a workdir to keep the exported model in")
    task = task or _task_of(model)
    if task not in _TASKS:
        raise ExportError(f"unknown task {task!r}; choose one of {', '.join(_TASKS)}")
    if runtime != "torch":  # fail on a missing extra before minutes of exporting
        require("onnxruntime" if runtime == "onnxruntime" else "openvino", f"the {runtime} runtime")
    path = _exported(model, runtime, Path(workdir), example_size)
    return Runner(_load(runtime, path), runtime=runtime, task=task, path=path, names=output_names(model))


def _task_of(model: nn.Module) -> str:
    check_not_one_stage(model)
    if is_detector(model):
        return "instance" if getattr(model.roi_heads, "has_mask", lambda: False)() else "detection"
    return "classification" if output_names(model) == ["logits"] else "semantic"


def _exported(model: nn.Module, runtime: str, workdir: Path, example_size: tuple[int, int]) -> Path:
    """The export for ``runtime`` in ``workdir``, written unless an export of the same model is there."""
    stem = workdir / f"model-{fingerprint(model)}"
    fmt = _FORMAT_OF[runtime]
    path = stem.with_suffix(SUFFIXES[fmt])
    if path.is_file():
        return path
    onnx_file = stem.with_suffix(".onnx")
    if fmt == "openvino" and onnx_file.is_file():
        return export_model(model, fmt, path, onnx_file=onnx_file)
    program = trace(model, example_size=example_size)
    if fmt == "openvino":  # keep the ONNX file: an onnxruntime runner of the same model reuses it
        export_model(model, "onnx", onnx_file, program=program)
        return export_model(model, fmt, path, onnx_file=onnx_file)
    return export_model(model, fmt, path, program=program)


def _load(runtime: str, path: Path) -> Callable[[Tensor], list[Tensor]]:
    if runtime == "torch":
        module = torch.export.load(str(path)).module()

        def run_torch(x: Tensor) -> list[Tensor]:
            with torch.no_grad():
                out = module(x)
            return list(out) if isinstance(out, (tuple, list)) else [out]
        return run_torch
    if runtime == "onnxruntime":
        ort = require("onnxruntime", "the onnxruntime runtime")
        options = ort.SessionOptions()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: [torch.from_numpy(a) for a in session.run(None, {name: x.numpy()})]
    ov = require("openvino", "the openvino runtime")
    from .openvino_engine import OpenVINOEngine, shared_core

    return OpenVINOEngine(shared_core().read_model(str(path)))

