"""One-stage detectors: torchvision's RetinaNet, FCOS and SSDlite on any backbone's feature levels.

The models *are* torchvision's :class:`~torchvision.models.detection.RetinaNet`,
:class:`~torchvision.models.detection.FCOS` and :class:`~torchvision.models.detection.ssd.SSD` with
torchvision's heads (``RetinaNetHead``, ``FCOSHead``, ``SSDLiteHead``), anchor generators, losses and
post-processing; vertebra supplies only the feature maps, read from the feature contract.  Like
Faster R-CNN they return a loss dict in ``train()`` and ``[{"boxes", "labels", "scores"}]`` in
``eval()``, so the training ``detection`` task and COCOeval take them unchanged.

==================  ==========================================  =========================================
head                feature maps                                anchors
==================  ==========================================  =========================================
``retinanet_fpn``   FPN over the three deepest levels (or       3 sizes per octave from 4x the stride x 3
                    ``levels=``) + P6, P7 (LastLevelP6P7)       ratios: torchvision's 32..512 at 8..128
``fcos_fpn``        as RetinaNet                                anchor-free: one point per location,
                                                                sized by the level's stride
``ssdlite``         deepest stride-16 and stride-32 levels +    DefaultBoxGenerator, ratios 2 and 3 on 6
                    four extra blocks (strides 64..512)         maps (torchvision's SSDlite)
==================  ==========================================  =========================================

``ssdlite(preset="torchvision")`` on ``mobilenet_v3_large`` is torchvision's
``ssdlite320_mobilenet_v3_large`` exactly (same state_dict after ``weights_key_map``, same outputs):
MobileNetV3 with ``reduced_tail`` (unless the backbone's options say otherwise), its first map the
*expansion* layer of the first stride-32 bottleneck (``C5_block``) as the MobileNetV3 paper (§6.3)
places it, and BatchNorm momentum 0.03.  That expansion output is the one map the feature contract
does not name (it lives inside a level's block), so this preset reads it with a forward hook on the
block's first layer; every other preset and head uses only the returned levels.

RetinaNet and FCOS have no torchvision reference on these families (torchvision builds them on
ResNet-50 only); their anchors and P6/P7 follow ``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block, _normal_init

from ..errors import ConfigError
from ..features import FeatureSpec
from ..norms import freeze_batchnorm, set_batchnorm
from ..validation import check_bool, check_choice, check_positive_int, check_range
from ._base import Requirements, requires
from ._fpn import BackboneWithFPN
from ._levels import feature_info_of
from .detection import (CheckedImages, SafeAnchorGenerator, _detection_requirements, check_anchor_sizes,
                        check_aspect_ratios, check_plain_keywords, chosen_levels, detector_options, freeze_stages)

__all__ = ["retinanet_fpn", "fcos_fpn", "ssdlite"]


class RetinaNetFPN(CheckedImages, RetinaNet):
    """torchvision's RetinaNet whose ``forward`` checks its images first (see :class:`~.detection.CheckedImages`)."""


class FCOSFPN(CheckedImages, FCOS):
    """torchvision's FCOS whose ``forward`` checks its images first."""


class SSDLite(CheckedImages, SSD):
    """torchvision's SSD with SSDlite's head and extra blocks, checking its images first."""


# -- RetinaNet and FCOS: a feature pyramid with P6/P7 ---------------------------------------------
def _pyramid_requirements(*, levels: Sequence[str] | None = None, **_) -> Requirements:
    return _detection_requirements(levels=levels)


@requires(_pyramid_requirements)
def retinanet_fpn(backbone: nn.Module, *, num_classes: int = 91, levels: Sequence[str] | None = None,
                  fpn_channels: int = 256, anchor_sizes: Sequence[Sequence[int]] | None = None,
                  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), trainable_layers: int | None = None,
                  frozen_bn: bool = False, min_size: int | Sequence[int] | None = None,
                  max_size: int | None = None, **detector_kwargs: Any) -> RetinaNet:
    """RetinaNet (Lin et al., focal loss; torchvision's) over an FPN with P6/P7 on the backbone's levels.

    Args:
        num_classes: classes including background (91 = COCO's id space, as torchvision).
        levels: level names feeding the FPN; ``None``: the three deepest.
        fpn_channels: width of every pyramid level and of the head's towers.
        anchor_sizes: one list of sizes per pyramid level (the chosen levels, then p6, p7), each the
            same length; ``None``: (4, 5.04, 6.35) x the level's stride, torchvision's octave scales.
        aspect_ratios: height/width ratios of the anchors, the same on every level.
        trainable_layers, frozen_bn, min_size, max_size: as :func:`~.detection.fasterrcnn_fpn`.
        **detector_kwargs: plain-valued torchvision ``RetinaNet`` keywords (``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``fg_iou_thresh``, ``topk_candidates``, ...).
    """
    args = locals()
    body, strides = _pyramid(RetinaNetFPN, "retinanet_fpn", retinanet_fpn, backbone, args)
    names = body.level_names + body.extra_names
    if anchor_sizes is None:
        sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in strides)
    else:
        sizes = check_anchor_sizes(anchor_sizes, names)
    ratios = check_aspect_ratios(aspect_ratios)
    anchors = SafeAnchorGenerator(sizes, (ratios,) * len(sizes))
    head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes)
    options = detector_options(RetinaNetFPN, "retinanet_fpn", retinanet_fpn, {}, args)
    return RetinaNetFPN(body, num_classes, anchor_generator=anchors, head=head, **options)


@requires(_pyramid_requirements)
def fcos_fpn(backbone: nn.Module, *, num_classes: int = 91, levels: Sequence[str] | None = None,
             fpn_channels: int = 256, num_convs: int = 4, trainable_layers: int | None = None,
             frozen_bn: bool = False, min_size: int | Sequence[int] | None = None, max_size: int | None = None,
             **detector_kwargs: Any) -> FCOS:
    """FCOS (Tian et al., anchor-free; torchvision's) over an FPN with P6/P7 on the backbone's levels.

    Each pyramid location is one point whose "anchor" is a box the size of its level's stride:
    torchvision's FCOS derives the centre-sampling radius and each level's regression range
    (4x to 8x the stride) from it, so the sizes are not an option.

    Args:
        num_classes: classes including background (91 = COCO's id space, as torchvision).
        levels: level names feeding the FPN; ``None``: the three deepest.
        fpn_channels: width of every pyramid level and of the head's towers.
        num_convs: conv layers in each head tower (torchvision: 4).
        trainable_layers, frozen_bn, min_size, max_size: as :func:`~.detection.fasterrcnn_fpn`.
        **detector_kwargs: plain-valued torchvision ``FCOS`` keywords (``center_sampling_radius``,
            ``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ...).
    """
    args = locals()
    check_positive_int(num_convs, "num_convs")
    if check_positive_int(fpn_channels, "fpn_channels") % 32:  # FCOSHead normalises with GroupNorm(32, channels)
        below = fpn_channels // 32 * 32
        raise ConfigError(f"must be a multiple of 32 (torchvision's FCOS head normalises with GroupNorm in 32 groups), "
                          f"got {fpn_channels}; e.g. {below or 32} or {below + 32}", path="fpn_channels")
    body, strides = _pyramid(FCOSFPN, "fcos_fpn", fcos_fpn, backbone, args)
    anchors = SafeAnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    head = FCOSHead(fpn_channels, 1, num_classes, num_convs=num_convs)
    options = detector_options(FCOSFPN, "fcos_fpn", fcos_fpn, {}, args)
    return FCOSFPN(body, num_classes, anchor_generator=anchors, head=head, **options)


def _pyramid(cls: type, head: str, builder: Any, backbone: nn.Module,
             args: dict[str, Any]) -> tuple[BackboneWithFPN, list[int]]:
    """The backbone (frozen as asked) under an FPN with P6/P7, and the strides of its maps."""
    check_positive_int(args["num_classes"], "num_classes", minimum=2)
    check_positive_int(args["fpn_channels"], "fpn_channels")
    check_bool(args["frozen_bn"], "frozen_bn")
    check_plain_keywords(cls, head, builder, args["detector_kwargs"])  # before any module is built
    chosen = chosen_levels(feature_info_of(backbone), args["levels"], 3)
    _freeze_as_asked(backbone, args["trainable_layers"], args["frozen_bn"], taps_start_stages=False)
    body = BackboneWithFPN(backbone, chosen, args["fpn_channels"], extra="p6p7")
    deepest = chosen[-1].stride
    return body, [spec.stride for spec in chosen] + [2 * deepest, 4 * deepest]


def _freeze_as_asked(backbone: nn.Module, trainable_layers: int | None, frozen_bn: bool, *,
                     taps_start_stages: bool) -> None:
    if trainable_layers is not None:
        freeze_stages(backbone, trainable_layers, taps_start_stages=taps_start_stages)
    if frozen_bn:
        freeze_batchnorm(backbone)


# -- SSDlite --------------------------------------------------------------------------------------
_SSD_PRESETS = ("default", "torchvision")
_SSD_EXTRA = (512, 256, 256, 128)  # torchvision's extra blocks, before width_mult
_SSD_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDlite norm_layer
_SSD_DEFAULTS = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # ssdlite320_mobilenet_v3_large's


def _ssdlite_requirements(*, preset: str = "default", **_) -> Requirements:
    if check_choice(preset, _SSD_PRESETS, "preset") == "torchvision":
        return Requirements(backbone_kwargs={"preset": "torchvision"}, backbone_defaults={"reduced_tail": True},
                            output_strides=(32,), names=("C5_block", "C5"), min_levels=2)
    return Requirements(output_strides=(32,), strides=(16, 32), min_levels=2)


class SSDLiteFeatures(nn.Module):
    """``body`` (the backbone) -> two of its maps -> four ``extra`` blocks -> ``{"0": map, ..., "5": map}``.

    ``tap`` (preset ``"torchvision"`` only) is the layer inside the backbone whose output is the
    first map; otherwise the first map is the level ``first``.
    """

    def __init__(self, body: nn.Module, first: str, second: str, extra: nn.ModuleList, tap: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.extra = extra
        self.first_level, self.second_level = first, second
        self._tap = [tap] if tap is not None else []  # a list: not a submodule (no second copy of its keys)

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        tapped: list[Tensor] = []
        caller = threading.get_ident()  # a concurrent forward in another thread must not feed this call

        def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            if threading.get_ident() == caller:
                tapped.append(output)

        handles = [layer.register_forward_hook(keep) for layer in self._tap]
        try:
            features = self.body(x)
        finally:
            for handle in handles:
                handle.remove()
        maps = [tapped[0] if tapped else features[self.first_level], features[self.second_level]]
        for block in self.extra:
            maps.append(block(maps[-1]))
        return OrderedDict((str(i), value) for i, value in enumerate(maps))


@requires(_ssdlite_requirements)
def ssdlite(backbone: nn.Module, *, num_classes: int = 91, preset: str = "default", size: int | Sequence[int] = 320,
            width_mult: float = 1.0, trainable_layers: int | None = None, frozen_bn: bool = False,
            **detector_kwargs: Any) -> SSD:
    """SSDlite (torchvision's SSD with SSDLiteHead) on the stride-16 and stride-32 maps + four extra blocks.

    The MobileNetV2 / V3 papers' mobile detector: depthwise-separable prediction heads and extra
    blocks, default boxes with ratios 2 and 3 on six maps, images resized to a fixed ``size``.

    Args:
        num_classes: classes including background (91 = COCO's id space, as torchvision).
        preset: ``"torchvision"`` reproduces ``ssdlite320_mobilenet_v3_large`` on ``mobilenet_v3_large``.
        size: the fixed square (or ``[height, width]``) every image is resized to (torchvision: 320).
        width_mult: width multiplier of the extra blocks (torchvision: 1.0, at least 16 channels).
        trainable_layers, frozen_bn: as :func:`~.detection.fasterrcnn_fpn`.
        **detector_kwargs: plain-valued torchvision ``SSD`` keywords (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ``iou_thresh``, ``image_mean``, ...);
            ``None`` of them: ``ssdlite320_mobilenet_v3_large``'s.
    """
    check_positive_int(num_classes, "num_classes", minimum=2)
    check_range(width_mult, "width_mult", low=0.0, low_inclusive=False)
    check_bool(frozen_bn, "frozen_bn")
    check_plain_keywords(SSDLite, "ssdlite", ssdlite, detector_kwargs)
    fixed = _fixed_size(size)
    info = feature_info_of(backbone)
    torchvision = preset == "torchvision"  # checked by _ssdlite_requirements
    _freeze_as_asked(backbone, trainable_layers, frozen_bn, taps_start_stages=torchvision)
    if torchvision:
        set_batchnorm(backbone, eps=0.001, momentum=0.03)
        tap = _expansion_of(backbone, info["C5_block"])
        first = FeatureSpec("C5_block_expansion", _out_channels(tap), info["C5_block"].stride)
        second = info["C5"]
    else:
        tap = None
        first = [spec for spec in info if spec.stride == 16][-1]
        second = info[-1]
    depths = [max(16, int(d * width_mult)) for d in _SSD_EXTRA]
    extra = nn.ModuleList(_extra_block(a, b, _SSD_BN) for a, b in zip([second.channels, *depths[:-1]], depths))
    _normal_init(extra)
    body = SSDLiteFeatures(backbone, first.name, second.name, extra, tap)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    channels = [first.channels, second.channels, *depths]
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes, _SSD_BN)
    model = SSDLite(body, anchors, fixed, num_classes, head=head, **{**_SSD_DEFAULTS, **detector_kwargs})
    if torchvision:
        model.weights_key_map = _torchvision_ssdlite_key_map(backbone, info["C5_block"].index)
    return model


def _fixed_size(size: Any) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ConfigError(f"must be one integer or [height, width], got {size!r}", path="size")
        return (check_positive_int(size[0], "size"), check_positive_int(size[1], "size"))
    side = check_positive_int(size, "size")
    return (side, side)


def _expansion_of(backbone: nn.Module, spec: FeatureSpec) -> nn.Module:
    """The expansion layer (``block[0]``) of the bottleneck producing ``spec``: torchvision's first SSDlite map."""
    layers = getattr(backbone, "features", None)
    block = getattr(layers[spec.index], "block", None) if isinstance(layers, nn.Sequential) else None
    if not isinstance(block, nn.Sequential) or len(block) < 2:
        raise ConfigError(f"preset='torchvision' reads the expansion layer inside level {spec.name!r}, which this "
                          f"backbone ({type(backbone).__name__}) does not have; use preset='default'",
                          path="preset")
    return block[0]


def _out_channels(layer: nn.Module) -> int:
    return next(m.out_channels for m in layer.modules() if isinstance(m, nn.Conv2d))


def _torchvision_ssdlite_key_map(backbone: nn.Module, split: int):
    """torchvision's ``SSDLiteFeatureExtractorMobileNet`` cuts ``features`` inside block ``split``:
    ``features.0`` = blocks before it + its expansion, ``features.1`` = the rest of it + later blocks.
    Extra blocks and head keep torchvision's names (``backbone.extra``, ``head``)."""
    from ..weights import KeyMap

    src, dst = "backbone.features.", "backbone.body.features."
    rules = [(f"{src}0.{i}.", f"{dst}{i}.") for i in range(split)]
    rules.append((f"{src}0.{split}.", f"{dst}{split}.block.0."))
    rules.append((f"{src}1.0.", f"{dst}{split}.block."))  # a Sequential slice keeps its indices (1, 2, ...)
    rules += [(f"{src}1.{k}.", f"{dst}{split + k}.") for k in range(1, len(backbone.features) - split)]
    return KeyMap(rules=rules)
