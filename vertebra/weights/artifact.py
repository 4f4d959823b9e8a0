"""The model artifact: one file that carries everything inference needs, and nothing executable.

Weights alone are not a usable model: predicting needs the architecture they belong to, what each
output class means and how training preprocessed its images.  Asking for the training data or
config at inference time is how a deployed model silently gets the wrong normalisation or labels,
so an artifact carries them all:

- the model config (``model.config``: ``registry.build_from_config`` rebuilds the architecture),
- the task and the class names (index ``i`` of the outputs is ``class_names[i]``),
- for models trained on COCO-format data, ``category_ids``: the data set's own category id of each
  class index (``None`` for the background at index 0), so results files speak the ids of the
  annotation file they will be scored against,
- the :class:`Preprocessing` of the evaluation transform,
- the tensors of the state dict, and a SHA-256 over them and the rest of the header
  (:mod:`vertebra.weights.digest`, the digest training checkpoints carry too), checked on every
  read (a flipped byte in the file is refused instead of loading as a slightly different model),
- free-form ``metadata`` (where it came from, metrics) for people, never interpreted,
- optionally an :class:`EmbeddedGraph`: a model already compiled for one runtime (the int8 OpenVINO
  IR that ``vertebra quantize`` writes), stored as byte tensors so the digest covers it too.  The
  float weights stay beside it: the artifact still rebuilds the model it was made from.

The file is safetensors: raw tensors plus a string header (here JSON), so reading it runs no code,
unlike a pickle.  ``format`` and ``version`` in the header let a reader refuse a file it does not
understand, naming both versions, rather than misread it.  Writes are atomic.

Version 2 added ``category_ids`` to the header.  Version 1 files still load: training then kept the
ids in ``metadata["category_ids"]``, which is read from version 1 files only (and only when it is
well-formed: metadata was free-form), never from a version 2 file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..atomic import atomic_open
from ..errors import ArtifactError, ConfigError
from ..validation import check_choice, check_positive_int
from .digest import content_digest

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_VERSION", "READABLE_VERSIONS", "TASKS", "RESIZE_MODES", "Preprocessing",
           "Artifact", "EmbeddedGraph", "save_artifact", "read_artifact", "check_category_ids", "tensor_digest"]

ARTIFACT_FORMAT = "vertebra-model"
ARTIFACT_VERSION = 2                # 2: category_ids in the header
READABLE_VERSIONS = (1, 2)
TASKS = ("classification", "detection", "instance", "semantic")
# none: the model takes any size (detectors resize themselves); shorter: the shorter side to
# ``size``; square: ``size`` x ``size``; shorter_crop: the shorter side to ``size``, then a centre
# crop of ``crop`` x ``crop`` (torchvision's classification evaluation).
RESIZE_MODES = ("none", "shorter", "square", "shorter_crop")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image in ``[0, 1]`` becomes the model's input (the evaluation transform of training)."""

    resize: str = "none"
    size: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None   # None: the model normalises itself (torchvision detectors)
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_choice(self.resize, RESIZE_MODES, "preprocessing.resize")
        if self.resize != "none":
            check_positive_int(self.size, "preprocessing.size")
        if self.resize == "shorter_crop":
            check_positive_int(self.crop, "preprocessing.crop")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both mean and std, or neither", path="preprocessing")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            ok = isinstance(values, (list, tuple)) and len(values) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
            if not ok or (name == "std" and min(values) <= 0):
                raise ConfigError(f"must be 3 finite numbers{' > 0' if name == 'std' else ''}, got {values!r}",
                                  path=f"preprocessing.{name}")
            object.__setattr__(self, name, tuple(float(v) for v in values))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean) if self.mean is not None else None
        data["std"] = list(self.std) if self.std is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        if not isinstance(data, Mapping):
            raise ConfigError(f"must be a mapping, got {type(data).__name__}", path="preprocessing")
        unknown = set(data) - {"resize", "size", "crop", "mean", "std"}
        if unknown:
            raise ConfigError.unknown_keys(unknown, ("resize", "size", "crop", "mean", "std"),
                                           where="preprocessing", path="preprocessing")
        return cls(**data)


@dataclass(frozen=True)
class EmbeddedGraph:
    """A runtime's own files of the model (``{"model.xml": bytes, "model.bin": bytes}`` for OpenVINO).

    ``runtime`` is what runs them, ``precision`` what they compute in (``int8``), ``info`` how they
    were made (backend, calibration, how many ops run in int8) -- read by people and reports only.
    """

    runtime: str
    precision: str
    files: dict[str, bytes] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)


_GRAPH_PREFIX = "graph/"   # tensor names of embedded files; state-dict keys never contain "/"


@dataclass(frozen=True)
class Artifact:
    """A model artifact as read from disk; ``state_dict`` loads strictly into ``build_from_config(config)``."""

    task: str
    config: dict[str, Any]
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    state_dict: dict[str, Tensor] = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The data set's category id of each class index (``None``: background, or not COCO-trained).
    category_ids: tuple[int | None, ...] | None = None
    graph: EmbeddedGraph | None = None


def check_category_ids(category_ids: Any, class_names: Sequence[str]) -> tuple[int | None, ...] | None:
    """``category_ids`` as a tuple, or a :class:`ConfigError`: one id per class name, each an int
    (unique) except index 0, which may be ``None`` (the background has no category)."""
    if category_ids is None:
        return None
    where = "category_ids"
    if isinstance(category_ids, (str, bytes, Mapping)) or not isinstance(category_ids, Sequence):
        raise ConfigError(f"must be a list with one COCO category id per class, got {type(category_ids).__name__}",
                          path=where)
    if len(category_ids) != len(class_names):
        raise ConfigError(f"has {len(category_ids)} ids for {len(class_names)} class names; give one per class "
                          "(None for the background at index 0)", path=where)
    for index, value in enumerate(category_ids):
        if value is None and index == 0:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"[{index}] ({class_names[index]!r}) is {value!r}; category ids are ints (only "
                              "index 0, the background, may be None)", path=where)
    ids = [value for value in category_ids if value is not None]
    repeated = sorted({value for value in ids if ids.count(value) > 1})
    if repeated:
        raise ConfigError(f"gives category id(s) {repeated} to more than one class; each class needs its own",
                          path=where)
    return tuple(category_ids)


def tensor_digest(state: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (:func:`~vertebra.weights.digest.content_digest`)."""
    return content_digest(dict(state))


def _artifact_digest(header: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> str:
    """The digest an artifact records: its header (less the digest itself) and its tensors.

    The header is covered too, so a damaged class name or normalisation is refused like a damaged tensor.
    """
    body = {key: value for key, value in header.items() if key != "sha256"}
    return content_digest({"header": body, "tensors": dict(tensors)})


def save_artifact(path: PathLike, model: nn.Module | Mapping[str, Tensor], *, task: str,
                  config: Mapping[str, Any] | None = None, class_names: Sequence[str],
                  preprocessing: Preprocessing, metadata: Mapping[str, Any] | None = None,
                  category_ids: Sequence[int | None] | None = None,
                  graph: EmbeddedGraph | None = None) -> Path:
    """Write ``model`` (a module, or its state dict with ``config``) as an artifact at ``path``, atomically.

    ``config`` defaults to ``model.config`` (every registry-built model has one).  ``category_ids``:
    the COCO category id of each class index (:func:`check_category_ids`), for COCO-trained models.
    ``graph`` embeds a runtime's compiled files beside the weights.
    """
    from safetensors.torch import save

    check_choice(task, TASKS, "task")
    if config is None:
        config = getattr(model, "config", None)
        if not isinstance(config, Mapping):
            raise ArtifactError("the model has no .config to rebuild it from; build it with vertebra.registry, "
                                "or pass config=")
    names = [str(name) for name in class_names]
    if not names:
        raise ArtifactError("an artifact needs the class names its outputs mean (class_names is empty)")
    if metadata and "category_ids" in metadata:
        raise ConfigError("category_ids is an artifact field, not metadata: pass save_artifact(..., "
                          "category_ids=[...])", path="metadata.category_ids")
    ids = check_category_ids(category_ids, names)
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    # safetensors refuses tensors that share memory; clone makes each one its own storage.
    tensors = {name: value.detach().cpu().clone().contiguous() for name, value in state.items()}
    header = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, "task": task, "config": dict(config),
              "class_names": names, "preprocessing": preprocessing.to_dict(),
              "category_ids": list(ids) if ids is not None else None, "metadata": dict(metadata or {})}
    if graph is not None:
        header["graph"] = {"runtime": graph.runtime, "precision": graph.precision, "files": sorted(graph.files),
                           "info": dict(graph.info)}
        for name, data in graph.files.items():
            tensors[_GRAPH_PREFIX + name] = torch.tensor(np.frombuffer(data, dtype=np.uint8))   # a copy it owns
    header = json.loads(json.dumps(header))     # the digest covers what a reader gets back from JSON
    header["sha256"] = _artifact_digest(header, tensors)
    blob = save(tensors, metadata={"vertebra": json.dumps(header)})
    target = Path(path)
    with atomic_open(target, "wb") as handle:
        handle.write(blob)
    return target


def read_artifact(path: PathLike) -> Artifact:
    """Read and verify an artifact; every problem is an :class:`ArtifactError` naming the file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ArtifactError(f"model artifact {str(file)!r} does not exist (or is not a file)")
    header, tensors = _read(file)
    _check_version(header, file)
    if _artifact_digest(header, tensors) != header.get("sha256"):
        raise ArtifactError(f"{str(file)!r} is damaged: its tensors or header do not match the SHA-256 recorded "
                            "when it was written; copy it again from the original")
    try:
        class_names = tuple(str(n) for n in header["class_names"])
        metadata = dict(header.get("metadata") or {})
        return Artifact(task=check_choice(header["task"], TASKS, "task"), config=dict(header["config"]),
                        class_names=class_names, preprocessing=Preprocessing.from_dict(header["preprocessing"]),
                        state_dict={k: v for k, v in tensors.items() if not k.startswith(_GRAPH_PREFIX)},
                        metadata=metadata, category_ids=_category_ids(header, metadata, class_names),
                        graph=_embedded_graph(header.get("graph"), tensors))
    except (KeyError, TypeError, ValueError) as error:  # ConfigError is a ValueError
        raise ArtifactError(f"{str(file)!r} has a malformed artifact header ({error})") from error


def _check_version(header: Mapping[str, Any], file: Path) -> None:
    version = header.get("version")
    if header.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{str(file)!r} is not a vertebra model artifact (no {ARTIFACT_FORMAT!r} header); "
                            "training writes one as OUT/model.safetensors")
    if type(version) is not int or version not in READABLE_VERSIONS:
        newer = type(version) is int and version > ARTIFACT_VERSION
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        raise ArtifactError(f"{str(file)!r} is artifact format version {version!r}, this vertebra reads versions "
                            f"{readable}; " + ("upgrade vertebra" if newer else
                                               "re-export it with this vertebra from its checkpoint"))


def _category_ids(header: Mapping[str, Any], metadata: Mapping[str, Any],
                  class_names: tuple[str, ...]) -> tuple[int | None, ...] | None:
    """The header's ``category_ids`` (version 2); a version 1 file's well-formed ``metadata`` copy."""
    if header["version"] >= 2:
        return check_category_ids(header.get("category_ids"), class_names)
    try:
        return check_category_ids(metadata.get("category_ids"), class_names)
    except ConfigError:       # version 1 metadata was free-form: a value that does not fit means nothing
        return None


def _embedded_graph(entry: Any, tensors: Mapping[str, Tensor]) -> EmbeddedGraph | None:
    """The header's ``graph`` entry and its byte tensors (KeyError/TypeError when they do not match)."""
    if entry is None:
        return None
    files = {str(name): tensors[_GRAPH_PREFIX + name].numpy().tobytes() for name in entry["files"]}
    return EmbeddedGraph(runtime=str(entry["runtime"]), precision=str(entry["precision"]), files=files,
                         info=dict(entry.get("info") or {}))


def _read(file: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get("vertebra")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        header = json.loads(raw) if raw is not None else {}
    except Exception as error:  # SafetensorError, OSError, JSONDecodeError
        raise ArtifactError(f"{str(file)!r} is not a readable model artifact ({type(error).__name__}: {error}); "
                            "copy it again or re-export it") from error
    if not isinstance(header, dict):
        raise ArtifactError(f"{str(file)!r} has a malformed artifact header")
    return header, tensors
