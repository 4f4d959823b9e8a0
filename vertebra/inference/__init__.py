"""The CPU inference fast path, attached to models from outside.

Backbones and heads know nothing of this package: they build torchvision's plain modules.

* :func:`attach_eager` swaps in the eager speed-ups in place (BatchNorm folded into the conv in
  eval mode, ASPP convolutions that skip padding-only taps); same parameters, state_dict keys and
  training behaviour.  The registry (``vertebra.registry.build`` / ``build_backbone`` /
  ``build_from_config``) calls it on every model it returns, so eager folding is on by default for
  registry-built models.  A model built by calling a family factory or head builder directly
  (``vertebra.backbones.efficientnet.efficientnet_b0()``) runs torchvision's plain modules until
  ``attach_eager(model)`` is called on it.
* :func:`inference_folding` turns eager folding off (or on) inside a ``with`` block.
* :func:`optimize` returns a separate, inference-only copy with every rewrite: BatchNorm folded
  for good, channels_last, oneDNN fusions, tiled early stages and fused TorchScript graphs.

Modules: ``folding`` (eager BatchNorm folding), ``atrous`` (padding-tap shortcut), ``eager``
(:func:`attach_eager`), ``fusion`` (oneDNN conv/SE rewrites), ``graph`` (fused graphs and the
in-place SE gate used while tracing), ``backbone`` (the optimized backbone class: graph, tiling),
``optimize`` (:func:`optimize`, :class:`OptimizationReport`).
"""

from __future__ import annotations

from .eager import attach_eager, detach_eager
from .folding import inference_folding
from .optimize import OptimizationReport, optimize  # binds the function over its submodule's name

__all__ = ["attach_eager", "detach_eager", "inference_folding", "optimize", "OptimizationReport"]
