"""Deployment: export any vertebra model (detectors included) to pt2, ONNX or OpenVINO and run it there.

- :func:`export_model` (:mod:`.export`) writes one file per format from one ``torch.export`` trace;
- :func:`make_runner` (:mod:`.runtimes`) runs an export in torch, ONNX Runtime or OpenVINO with the
  eager model's output structure;
- :class:`ExportableDetector` (:mod:`.detection`) is the single-image graph the detectors export as.

Names load on first use, like the rest of vertebra (ONNX Runtime and OpenVINO only when a runner
or an export needs them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "export_model": ".export",
    "FORMATS": ".export",
    "make_runner": ".runtimes",
    "Runner": ".runtimes",
    "ExportableDetector": ".detection",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .detection import ExportableDetector
    from .export import FORMATS, export_model
    from .runtimes import Runner, make_runner

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
