"""vertebra: any vision backbone under any head.

``from vertebra import registry`` is the only door most users need.  Importing ``vertebra`` is
cheap: the registry, the plugins and torch-heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports, provide

# name -> the module it lives in; ``optimize`` is the function (the backend dispatcher of
# vertebra.deploy.backends, whose default backend is vertebra.inference.optimize), never a module
_HOMES = {"registry": ".registry", "optimize": ".deploy.backends", "load_model": ".deploy.model",
          "Predictor": ".deploy.predict", "quantize": ".quantization.api", "__version__": ".version"}
__all__ = ["registry", "optimize", "load_model", "Predictor", "quantize", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from . import registry
    from .deploy.model import load_model
    from .deploy.predict import Predictor
    from .deploy.backends import optimize
    from .quantization.api import quantize
    from .version import __version__

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())

# vertebra.weights looks named checkpoints up (load_weights(model, "efficientnet_b0.imagenet")), but
# the registry that holds them sits above it and imports it; the package root wires the two.
provide("named checkpoints", ".registry._weights", __name__)
