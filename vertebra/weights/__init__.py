"""Pretrained weights: named checkpoints, their cache, and the strict loader.

``load_weights(model, source)`` loads a file, a named checkpoint (``"efficientnet_b0.imagenet"``;
:func:`named_weights` lists them) or a state dict, after checking every name and shape; a failed
load leaves the model unchanged.  The pieces, one idea each:

- :mod:`~vertebra.weights.entry`: :class:`WeightsEntry`, a named checkpoint as a value (torch-free:
  plugins build them and ``vertebra list`` shows them without torch);
- :mod:`~vertebra.weights.torchvision`: vertebra's own entries, torchvision's published checkpoints;
- :mod:`~vertebra.weights.names`: looking entries up (the registry answers; see that module);
- :mod:`~vertebra.weights.cache`: ``$VERTEBRA_HOME``, the hash check, downloads, offline errors;
- :mod:`~vertebra.weights.files`: reading a weights file safely (``weights_only=True``);
- :mod:`~vertebra.weights.digest`: the content digest every checkpoint and artifact vertebra
  writes is sealed with, and every read checks;
- :mod:`~vertebra.weights.keys`: :class:`KeyMap` and the one key/shape fit check;
- :mod:`~vertebra.weights.loader`: :func:`load_weights` and its :class:`LoadReport`;
- :mod:`~vertebra.weights.artifact`: the model artifact (weights + config + class names +
  preprocessing in one verified safetensors file) that predict and export read.

Names load on first use, so ``from vertebra.weights import WeightsEntry`` imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_HOMES = {
    "load_weights": ".loader",
    "LoadReport": ".loader",
    "KeyMap": ".keys",
    "WeightsEntry": ".entry",
    "describe_entry": ".entry",
    "named_weights": ".names",
    "get_weights_entry": ".names",
    "cache_dir": ".cache",
    "read_state_dict": ".files",
    "Artifact": ".artifact",
    "Preprocessing": ".artifact",
    "save_artifact": ".artifact",
    "read_artifact": ".artifact",
}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # pragma: no cover
    from .artifact import Artifact, Preprocessing, read_artifact, save_artifact
    from .cache import cache_dir
    from .entry import WeightsEntry, describe_entry
    from .files import read_state_dict
    from .keys import KeyMap
    from .loader import LoadReport, load_weights
    from .names import get_weights_entry, named_weights

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
