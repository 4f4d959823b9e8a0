"""Attach the eager inference speed-ups to a built model, from outside and in place.

Backbones and heads build torchvision's plain modules and know nothing of the fast path;
:func:`attach_eager` then swaps the classes of the modules that have a faster eager equivalent:

* every plain ``Conv2dNormActivation`` inside a vertebra :class:`~vertebra.backbones.Backbone`
  becomes a :class:`~vertebra.inference.folding.FoldingConv2dNormActivation` (BatchNorm folded
  into the conv in inference, :mod:`vertebra.inference.folding`);
* the dilated convolutions of every ASPP module (torchvision's DeepLabV3 head, smp's DeepLabV3+
  decoder) become :class:`~vertebra.inference.atrous.AtrousConv2d` (:mod:`vertebra.inference.atrous`).

Only classes change: parameters, buffers, hooks, state_dict keys and training behaviour stay
exactly as built, so torchvision checkpoints still load strictly.
"""

from __future__ import annotations

import sys

from torch import nn

from ..backbones import Backbone
from torchvision.ops import Conv2dNormActivation

from .atrous import AtrousConv2d, skip_padding_taps
from .folding import FoldingConv2dNormActivation, fold_conv_norm_activations

__all__ = ["attach_eager", "detach_eager"]

# The ASPP classes whose dilated branches may skip padding-only taps (module, class name).  Looked up
# in sys.modules: a model can only hold one if its module was imported, and smp stays unimported.
_ASPP_CLASSES = (("torchvision.models.segmentation.deeplabv3", "ASPP"),
                 ("segmentation_models_pytorch.decoders.deeplabv3.decoder", "ASPP"))


def _aspp_classes() -> tuple[type, ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in _ASPP_CLASSES)
    return tuple(cls for cls in found if isinstance(cls, type))


def attach_eager(model: nn.Module) -> nn.Module:
    """Give ``model`` (a backbone or a whole model) the eager inference speed-ups, in place; returns it.

    Safe to call more than once: modules already swapped are left as they are.
    """
    aspp = _aspp_classes()
    for module in model.modules():
        if isinstance(module, Backbone):
            fold_conv_norm_activations(module)
        elif aspp and isinstance(module, aspp):
            skip_padding_taps(module)
    return model


def detach_eager(model: nn.Module) -> nn.Module:
    """Undo :func:`attach_eager` in place: torchvision's plain classes again; returns ``model``.

    For tools that trace every call a model makes and must see the same ops in training and in
    evaluation -- quantization-aware training inserts fake quantizers by the functions it sees, and
    a fold that only runs in evaluation would hide the convolutions it wraps.
    """
    for module in model.modules():
        if type(module) is FoldingConv2dNormActivation:
            module.__class__ = Conv2dNormActivation
        elif type(module) is AtrousConv2d:
            module.__class__ = nn.Conv2d
    return model
