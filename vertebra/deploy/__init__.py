"""Deployment: a trained model artifact to predictions, and to files other runtimes run.

- :func:`load_model` rebuilds the model of an artifact (``OUT/model.safetensors``) ready to run, with
  what the artifact says about it (task, class names, preprocessing) as ``model.artifact``.
- :class:`Predictor` decodes images, preprocesses them as training evaluated them, runs the model (in
  torch, or an exported runtime) and maps the outputs back to each original image;
  :meth:`Predictor.predict_to` also writes result files and overlays, with a COCO annotation file's
  ground truth on them where given (:mod:`.truth`; ``vertebra predict --ground-truth``).
- :func:`export_model` (:mod:`.export`) writes one file per format (pt2, ONNX, OpenVINO) from one
  ``torch.export`` trace; :class:`ExportableDetector` (:mod:`.detection`) is the single-image graph
  the detectors export as.
- :func:`make_runner` (:mod:`.runtimes`) runs an export in torch, ONNX Runtime or OpenVINO with the
  eager model's output structure.

Names load on first use, like the rest of vertebra (ONNX Runtime and OpenVINO only when a runner
or an export needs them).
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
    "export_model": ".export",
    "FORMATS": ".export",
    "make_runner": ".runtimes",
    "Runner": ".runtimes",
    "ExportableDetector": ".detection",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .images import find_images, load_image
    from .model import load_model, model_artifact
    from .predict import RUNTIMES, Prediction, Predictor, PredictRun
    from .detection import ExportableDetector
    from .export import FORMATS, export_model
    from .runtimes import Runner, make_runner

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
