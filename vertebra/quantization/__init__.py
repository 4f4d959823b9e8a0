"""int8: post-training quantization of a model artifact into an int8 artifact (``vertebra quantize``).

- :func:`quantize` calibrates on image folders or a training config and returns a :class:`Quantized`
  (callable; ``.save(path)`` writes the int8 artifact, ``.report`` says what runs in int8).
- :mod:`.calibration` turns a calibration source into preprocessed inputs, refusing too few.
- :mod:`.openvino_int8` is the backend (NNCF -> OpenVINO int8); :mod:`.report` counts the layers the
  compiled model really runs in int8.

Needs the extra: ``pip install "vertebra[quantize]"`` (NNCF and OpenVINO).  Names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "quantize": ".api",
    "Quantized": ".api",
    "BACKENDS": ".api",
    "calibration_inputs": ".calibration",
    "count_runtime_ops": ".report",
    "OpCount": ".report",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .api import BACKENDS, Quantized, quantize
    from .calibration import calibration_inputs
    from .report import OpCount, count_runtime_ops

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
