"""Dense heads from torchvision: LR-ASPP and DeepLabV3, on any vertebra backbone.

Both reuse torchvision's own head modules (``LRASPPHead``, ``DeepLabHead``, ``FCNHead``) and keep
torchvision's attribute names (``backbone``, ``classifier``, ``aux_classifier``), so a torchvision
segmentation checkpoint loads with one prefix rewrite: torchvision keeps the bare ``features``
layers under ``backbone.N``, vertebra keeps the whole Backbone there (``backbone.features.N``).

What each head asks of the backbone (the registry builds the backbone accordingly, so users never
pass dilation by hand):

* ``lraspp``: the deepest level at stride 16 (the registry asks for ``output_stride=16`` unless the
  user set ``backbone.output_stride``; 8 works too) and a stride-8 level.  *low* = the shallowest
  stride-8 level, *high* = the deepest level (see :mod:`vertebra.heads._levels`).
* ``deeplabv3``: the ASPP on the deepest level at output stride 16 (default) or 8 — set on the head
  (``output_stride=8``) or on the backbone (``backbone.output_stride=8``), either is honoured; with
  ``aux_loss=True`` an FCN head on the shallowest stride-8 level, as torchvision's MobileNetV3 model.
* ``fcn``: torchvision's ``FCNHead`` on the deepest level at any output stride (8 as in the FCN
  paper's dilated variant, 16 or 32), optional auxiliary FCN head on the shallowest stride-8 level.
  torchvision ships FCN only on ResNets, so there is no MobileNetV3 / EfficientNet reference.

``preset="torchvision"`` asks the backbone for torchvision's tap points (MobileNetV3 only); with it,
``lraspp`` and ``deeplabv3(aux_loss=True)`` on ``mobilenet_v3_large`` are architecturally identical to
torchvision's ``lraspp_mobilenet_v3_large`` / ``deeplabv3_mobilenet_v3_large``.

Outputs follow torchvision: ``{"out": logits at input size}`` plus ``"aux"`` when the auxiliary head
exists (computed in eval mode too, as torchvision does; use ``aux_loss=False`` for inference).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead

from ._base import Requirements, output_stride_requirements, requires
from ._levels import feature_info_of, input_channels, shallowest_with_stride
from ..inputs import check_batch
from ..validation import check_bool, check_choice, check_int_list, check_positive_int
from ._options import torchvision_dense_key_map

__all__ = ["lraspp", "deeplabv3", "fcn"]

_PRESETS = ("default", "torchvision")
_DILATED_OUTPUT_STRIDES = (8, 16)   # the ASPP / LR-ASPP heads: a dilated deepest level


def _preset_kwargs(preset: str) -> dict:
    return {"preset": "torchvision"} if check_choice(preset, _PRESETS, "preset") == "torchvision" else {}


def _lraspp_requirements(*, preset: str = "default", **_) -> Requirements:
    return output_stride_requirements(None, _DILATED_OUTPUT_STRIDES, preset_kwargs=_preset_kwargs(preset),
                                      strides=(8,), min_levels=2)


def _deeplabv3_requirements(*, output_stride: int | None = None, aux_loss: bool = False,
                            preset: str = "default", **_) -> Requirements:
    check_bool(aux_loss, "aux_loss")
    return output_stride_requirements(output_stride, _DILATED_OUTPUT_STRIDES, preset_kwargs=_preset_kwargs(preset),
                                      strides=(8,) if aux_loss else (), min_levels=2 if aux_loss else 1)


def _fcn_requirements(*, aux_loss: bool = False, **_) -> Requirements:
    check_bool(aux_loss, "aux_loss")
    return Requirements(strides=(8,) if aux_loss else (), min_levels=2 if aux_loss else 1)


class LRASPP(nn.Module):
    """Lite R-ASPP (MobileNetV3 paper): a squeeze-gated 1x1 branch on *high* plus a 1x1 on *low*."""

    def __init__(self, backbone: nn.Module, low: str, high: str, low_channels: int, high_channels: int,
                 num_classes: int, inter_channels: int = 128):
        super().__init__()
        self.backbone = backbone
        self.classifier = LRASPPHead(low_channels, high_channels, num_classes, inter_channels)
        self.low_level, self.high_level = low, high

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        check_batch(x, self, channels=input_channels(self.backbone))
        features = self.backbone(x)
        logits = self.classifier({"low": features[self.low_level], "high": features[self.high_level]})
        result: OrderedDict[str, Tensor] = OrderedDict()
        result["out"] = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return result


class DeepLabV3(nn.Module):
    """``classifier`` on the deepest level, optional FCN auxiliary head on an intermediate one.

    The layout of torchvision's ``DeepLabV3`` and ``FCN`` models (both are ``_SimpleSegmentationModel``):
    :class:`FCN` is the same with torchvision's ``FCNHead`` as ``classifier``."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, out_level: str,
                 aux_classifier: nn.Module | None = None, aux_level: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.out_level, self.aux_level = out_level, aux_level

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        check_batch(x, self, channels=input_channels(self.backbone))
        size = x.shape[-2:]
        features = self.backbone(x)
        result: OrderedDict[str, Tensor] = OrderedDict()
        result["out"] = F.interpolate(self.classifier(features[self.out_level]), size=size,
                                      mode="bilinear", align_corners=False)
        if self.aux_classifier is not None and self.aux_level is not None:
            result["aux"] = F.interpolate(self.aux_classifier(features[self.aux_level]), size=size,
                                          mode="bilinear", align_corners=False)
        return result


class FCN(DeepLabV3):
    """torchvision's ``FCN`` layout: ``FCNHead`` as ``classifier`` on the deepest level, optional ``aux``."""


def _aux_head(info, num_classes: int) -> tuple[nn.Module, str]:
    """torchvision's auxiliary FCN head and the level it reads: the shallowest stride-8 one."""
    aux = shallowest_with_stride(info, 8)
    return FCNHead(aux.channels, num_classes), aux.name


@requires(_lraspp_requirements)
def lraspp(backbone: nn.Module, *, num_classes: int = 21, inter_channels: int = 128,
           preset: str = "default") -> LRASPP:
    """LR-ASPP segmentation (MobileNetV3 paper) on a stride-8 *low* level and the deepest level.

    The deepest level is at stride 16 (the registry dilates the backbone) unless the user built the
    backbone with ``output_stride=8``, which LR-ASPP takes as well.

    Args:
        num_classes: output channels, background included (21 = Pascal VOC).
        inter_channels: width of the high-level branch (torchvision: 128).
        preset: ``"torchvision"`` asks the backbone for torchvision's tap points so the model equals
            ``torchvision.models.segmentation.lraspp_mobilenet_v3_large`` (MobileNetV3 only).
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(inter_channels, "inter_channels")  # preset: checked by _lraspp_requirements
    info = feature_info_of(backbone)
    low, high = shallowest_with_stride(info, 8), info[-1]
    model = LRASPP(backbone, low.name, high.name, low.channels, high.channels, num_classes, inter_channels)
    model.weights_key_map = torchvision_dense_key_map()
    return model


@requires(_deeplabv3_requirements)
def deeplabv3(backbone: nn.Module, *, num_classes: int = 21, output_stride: int | None = None,
              aux_loss: bool = False,
              atrous_rates: Sequence[int] = (12, 24, 36), preset: str = "default") -> DeepLabV3:
    """DeepLabV3: atrous spatial pyramid pooling on the deepest level, dilated to ``output_stride``.

    Args:
        num_classes: output channels, background included.
        output_stride: 16 or 8; the registry builds the backbone dilated to it.  ``None``: the
            backbone's ``output_stride`` if the user set it (8 or 16), else 16.
        aux_loss: add torchvision's FCN auxiliary head on the shallowest stride-8 level (output ``"aux"``).
        atrous_rates: ASPP dilation rates; (12, 24, 36) is what torchvision uses at every output stride
            (the paper uses (6, 12, 18) at output stride 16).
        preset: ``"torchvision"`` reproduces ``deeplabv3_mobilenet_v3_large`` on ``mobilenet_v3_large``.
    """
    check_positive_int(num_classes, "num_classes")  # output_stride, aux_loss, preset: _deeplabv3_requirements
    rates = check_int_list(atrous_rates, "atrous_rates")
    info = feature_info_of(backbone)
    out = info[-1]
    aux_classifier, aux_level = _aux_head(info, num_classes) if aux_loss else (None, None)
    head = DeepLabHead(out.channels, num_classes, rates)
    model = DeepLabV3(backbone, head, out.name, aux_classifier, aux_level)
    model.weights_key_map = torchvision_dense_key_map()
    return model



@requires(_fcn_requirements)
def fcn(backbone: nn.Module, *, num_classes: int = 21, aux_loss: bool = False) -> FCN:
    """FCN (Long et al.; torchvision's ``FCNHead``: 3x3 conv to a quarter of the channels, 1x1 to classes).

    Reads the deepest level at whatever output stride the backbone has (``backbone.output_stride``
    8 or 16 for the dilated variants torchvision builds on ResNets, 32 for the plain one).

    Args:
        num_classes: output channels, background included.
        aux_loss: add an auxiliary FCN head on the shallowest stride-8 level (output ``"aux"``).
    """
    check_positive_int(num_classes, "num_classes")  # aux_loss: checked by _fcn_requirements
    info = feature_info_of(backbone)
    out = info[-1]
    aux_classifier, aux_level = _aux_head(info, num_classes) if aux_loss else (None, None)
    model = FCN(backbone, FCNHead(out.channels, num_classes), out.name, aux_classifier, aux_level)
    model.weights_key_map = torchvision_dense_key_map()
    return model
