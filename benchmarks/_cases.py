"""What is benchmarked against what: one row per case, references built the way their libraries build them.

Every reference is built with random weights (nothing is downloaded).  A reference is "the same
architecture" when its parameter count equals ours (backbone and classifier cases count the
parameters of the modules the timed forward runs); the suite records that flag next to each ratio,
so a ratio between different architectures (smp's EfficientNet encoders stop at 320 channels, ours
ends with the 1280-channel conv) is never mistaken for a like-for-like one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["BackboneCase", "BACKBONES", "HEAD_BACKBONES", "COMPILED_REFERENCE", "FeaturesOnly", "head_kwargs",
           "head_references", "task_of", "timm_model", "torchvision_classifier"]


@dataclass(frozen=True)
class BackboneCase:
    """A backbone benchmarked as a backbone and as a classifier, with its references.

    torchvision: the classification builder with exactly this architecture.
    timm: timm's model with the same architecture (same parameter count, symmetric padding), if any:
        ``efficientnetv2_s`` rather than ``tf_efficientnetv2_s``, whose TF "same" padding adds work.
    """

    name: str
    torchvision: str
    timm: str | None


BACKBONES = (
    BackboneCase("efficientnet_b0", "efficientnet_b0", "efficientnet_b0"),
    BackboneCase("efficientnet_b3", "efficientnet_b3", "efficientnet_b3"),
    BackboneCase("efficientnet_v2_s", "efficientnet_v2_s", "efficientnetv2_s"),
    BackboneCase("mobilenet_v3_large", "mobilenet_v3_large", "mobilenetv3_large_100"),
    BackboneCase("mobilenet_v3_small", "mobilenet_v3_small", "mobilenetv3_small_100"),
)

# The optimized cases also race torch.compile(torchvision model) for these (issue 6, target 2); compiling
# costs minutes on a small CPU, so not for every backbone.
COMPILED_REFERENCE = ("efficientnet_b0", "mobilenet_v3_large")

# Heads are benchmarked on these two backbones (issue 6); every registered head except the classifier,
# which the backbone cases cover.
HEAD_BACKBONES = ("mobilenet_v3_large", "efficientnet_b0")

DETECTION = {"fasterrcnn_fpn": "boxes", "maskrcnn_fpn": "masks", "retinanet_fpn": "boxes", "fcos_fpn": "boxes",
             "ssdlite": "boxes"}
ONE_STAGE = {"retinanet_fpn", "fcos_fpn", "ssdlite"}  # no RPN: the light caps do not apply
# Heads whose ``preset="torchvision"`` reproduces a torchvision model on MobileNetV3-Large.
_TORCHVISION_PRESET = {"lraspp", "deeplabv3", "fasterrcnn_fpn", "maskrcnn_fpn", "ssdlite"}
_SMP = {"unet": "Unet", "fpn": "FPN", "deeplabv3plus": "DeepLabV3Plus", "upernet": "UPerNet",
        "unetplusplus": "UnetPlusPlus", "manet": "MAnet", "linknet": "Linknet", "pan": "PAN", "segformer": "Segformer",
        "pspnet": "PSPNet"}
# smp's PSPNet cuts its encoder at stride 8 by default; ours reads the deepest level (stride 32): compare like for like.
_SMP_OPTIONS = {"pspnet": {"encoder_depth": 5, "upsampling": 32}}
_SMP_ENCODERS = {"mobilenet_v3_large": "tu-mobilenetv3_large_100", "efficientnet_b0": "tu-efficientnet_b0"}
NUM_CLASSES = {"segmentation": 21, "boxes": 3, "masks": 3}


# Heads that cannot take the quick runs' 64 px: PAN (ours and smp's) max-pools the stride-16 map three times.
_MIN_INPUT = {"pan": 128}


def input_size(head: str, size: int) -> int:
    """The benchmark's image side for ``head``: ``size``, or the smallest the head takes."""
    return max(size, _MIN_INPUT.get(head, 0))


def task_of(head: str) -> str:
    """``"boxes"`` / ``"masks"`` for detection heads, ``"segmentation"`` for every other dense head."""
    return DETECTION.get(head, "segmentation")


# Quick and smoke runs cap the detectors' proposal counts (ours and torchvision's alike): the box head's
# 12544->1024 linear layer on hundreds of RoIs dominates a small-image step otherwise.
LIGHT_DETECTION = {"rpn_post_nms_top_n_train": 64, "rpn_post_nms_top_n_test": 64, "box_batch_size_per_image": 32}


def detection_kwargs(size: int, light: bool) -> dict[str, Any]:
    """Detector keywords shared by ours and the torchvision reference: the resize, and the light caps."""
    return {"min_size": size, "max_size": size, **(LIGHT_DETECTION if light else {})}


def head_kwargs(head: str, backbone: str, size: int, light: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``registry.build(head, backbone=..., **kwargs)`` in the benchmark."""
    kwargs: dict[str, Any] = {"num_classes": NUM_CLASSES[task_of(head)]}
    if head in _TORCHVISION_PRESET and backbone == "mobilenet_v3_large":
        kwargs["preset"] = "torchvision"
    if head == "ssdlite":
        kwargs["size"] = SSDLITE_SIZE  # torchvision's fixed resize, so ours and its reference do the same work
    elif head in ONE_STAGE:
        kwargs.update(min_size=size, max_size=size)
    elif head in DETECTION:
        kwargs.update(detection_kwargs(size, light))
    return kwargs


def torchvision_classifier(name: str) -> nn.Module:
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def timm_model(name: str, **kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def _tv_lraspp(size: int, light: bool) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES["segmentation"])


def _tv_deeplabv3(size: int, light: bool) -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False,
                                        num_classes=NUM_CLASSES["segmentation"])


def _tv_fasterrcnn(size: int, light: bool) -> nn.Module:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    return fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES["boxes"],
                                             **detection_kwargs(size, light))


SSDLITE_SIZE = 320


def _tv_ssdlite(size: int, light: bool) -> nn.Module:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES["boxes"])


def _tv_maskrcnn(size: int, light: bool) -> nn.Module:
    """torchvision has no MobileNetV3 Mask R-CNN; this is its MaskRCNN on its own MobileNetV3 FPN backbone,
    with the anchors and RPN threshold of its ``fasterrcnn_mobilenet_v3_large_fpn``."""
    from torchvision.models.detection import MaskRCNN

    detector = _tv_fasterrcnn(size, light)
    return MaskRCNN(detector.backbone, num_classes=NUM_CLASSES["masks"],
                    rpn_anchor_generator=detector.rpn.anchor_generator,
                    rpn_score_thresh=0.05, **detection_kwargs(size, light))


def _smp(head: str, backbone: str) -> Callable[[int, bool], nn.Module] | None:
    encoder = _SMP_ENCODERS.get(backbone)
    if head not in _SMP or encoder is None:
        return None

    def build(size: int, light: bool) -> nn.Module:
        import segmentation_models_pytorch as smp

        return getattr(smp, _SMP[head])(encoder_name=encoder, encoder_weights=None,
                                        classes=NUM_CLASSES["segmentation"], **_SMP_OPTIONS.get(head, {}))

    return build


_TORCHVISION_HEADS = {"lraspp": _tv_lraspp, "deeplabv3": _tv_deeplabv3, "fasterrcnn_fpn": _tv_fasterrcnn,
                      "maskrcnn_fpn": _tv_maskrcnn, "ssdlite": _tv_ssdlite}


def head_references(head: str, backbone: str) -> dict[str, Callable[[int, bool], nn.Module]]:
    """Reference builders (``(size, light) -> model``) for a head on a backbone, primary first; may be empty."""
    references: dict[str, Callable[[int, bool], nn.Module]] = {}
    if backbone == "mobilenet_v3_large" and head in _TORCHVISION_HEADS:
        references["torchvision"] = _TORCHVISION_HEADS[head]
    smp_builder = _smp(head, backbone)
    if smp_builder is not None:
        references["smp"] = smp_builder
    return references


class FeaturesOnly(nn.Module):
    """timm's ``forward_features`` as a module's ``forward`` (so it can be compiled like any module)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)
