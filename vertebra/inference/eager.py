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
from .atrous import skip_padding_taps
from .folding import fold_conv_norm_activations

__all__ = ["attach_eager"]

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
