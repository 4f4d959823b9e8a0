"""Deployment: a trained model artifact to predictions on image files.

- :func:`load_model` rebuilds the model of an artifact (``OUT/model.safetensors``) ready to run, with
  what the artifact says about it (task, class names, preprocessing) as ``model.artifact``.
- :class:`Predictor` decodes images, preprocesses them as training evaluated them, runs the model (in
  torch, or an exported runtime) and maps the outputs back to each original image;
  :meth:`Predictor.predict_to` also writes result files and overlays (``vertebra predict``).

Names load on first use, like the rest of vertebra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "load_model": ".model",
    "model_artifact": ".model",
    "Predictor": ".predict",
    "Prediction": ".predict",
    "PredictRun": ".predict",
    "RUNTIMES": ".predict",
    "load_image": ".images",
    "find_images": ".images",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .images import find_images, load_image
    from .model import load_model, model_artifact
    from .predict import RUNTIMES, Prediction, Predictor, PredictRun

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
