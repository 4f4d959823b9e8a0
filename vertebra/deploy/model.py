"""``load_model(path)``: an artifact back to a model ready to run, with no training data or config.

The model is an ordinary ``nn.Module`` (so it can be optimized, exported or fine-tuned like any
other), in eval mode, with the artifact's description attached as ``model.artifact``: an
:class:`~vertebra.weights.artifact.Artifact` whose ``task``, ``class_names``, ``preprocessing``,
``config`` and ``metadata`` say how to feed it and read its outputs.  Its ``state_dict`` is emptied
there: the weights live in the model, and keeping a second copy would double the memory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError
from ..weights.artifact import Artifact, read_artifact

__all__ = ["load_model", "model_artifact", "resolve_artifact_path", "ARTIFACT_NAME"]

ARTIFACT_NAME = "model.safetensors"   # what training writes into its output folder


def resolve_artifact_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path/model.safetensors`` when ``path`` is a training output folder."""
    file = Path(path).expanduser()
    if file.is_dir():
        if not (file / ARTIFACT_NAME).is_file():
            raise ArtifactError(f"{str(file)!r} is a folder without {ARTIFACT_NAME}; pass the model artifact "
                                f"a training run wrote (OUT/{ARTIFACT_NAME})")
        return file / ARTIFACT_NAME
    return file


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> nn.Module:
    """The model of the artifact at ``path`` (a file, or a training output folder), in eval mode on ``device``.

    The architecture comes from the artifact's config through the registry and the weights load
    strictly, so a file that does not match its own config is refused instead of half-loaded.
    """
    from .. import registry

    file = resolve_artifact_path(path)
    artifact = read_artifact(file)
    try:
        model = registry.build_from_config(artifact.config)
        model.load_state_dict(artifact.state_dict, strict=True)
    except RuntimeError as error:   # load_state_dict: missing / unexpected keys, shape mismatches
        raise ArtifactError(f"{str(file)!r}: its weights do not fit the model its config builds ({error}); "
                            "re-export it from the training checkpoint") from error
    model.artifact = dataclasses.replace(artifact, state_dict={})
    return model.to(device).eval()


def model_artifact(model: nn.Module) -> Artifact:
    """The artifact description of a model from :func:`load_model`; an ArtifactError for any other model."""
    artifact = getattr(model, "artifact", None)
    if not isinstance(artifact, Artifact):
        raise ArtifactError(f"this {type(model).__name__} carries no artifact description (model.artifact); "
                            "load it with vertebra.load_model(path), or pass the artifact path itself")
    return artifact
