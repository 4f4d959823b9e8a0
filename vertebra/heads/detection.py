"""Faster R-CNN and Mask R-CNN over a feature pyramid built from any backbone's ``feature_info``.

The models *are* torchvision's :class:`~torchvision.models.detection.FasterRCNN` /
:class:`~torchvision.models.detection.MaskRCNN` (same losses, same outputs: a loss dict in
``train()``, a list of ``{"boxes", "labels", "scores"[, "masks"]}`` in ``eval()``); vertebra supplies
the backbone-with-FPN, anchors per pyramid level and ``MultiScaleRoIAlign`` over the level names.

Levels (``levels=None`` picks per preset, a list of level names overrides):

=====================  ======================  =================================================
preset                 backbone levels         anchors (per pyramid level, ratios 0.5/1/2)
=====================  ======================  =================================================
``"default"``          three deepest: C3 C4 C5  4x and 8x the level's stride (32..512 px over
                       (strides 8/16/32)        C3, C4, C5 and the max-pool level, stride 64)
``"torchvision"``      C5_block, C5 (both       (32, 64, 128, 256, 512) on every level,
                       stride 32)               torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``
``"torchvision_320"``  as above                 as above; min/max size 320/640, RPN top-n 150
=====================  ======================  =================================================

Why two stride-32 levels in the torchvision presets: torchvision's MobileNetV3 detectors tap the
first, strided block of each stage and use the last two taps (pytorch/vision#5838); vertebra's
default taps the last block of each stride group and builds a classic C3-C5 pyramid, which sees
small objects at stride 8.  ``preset="torchvision*"`` asks the backbone for ``preset="torchvision"``
(MobileNetV3 only) and with ``mobilenet_v3_large`` reproduces torchvision's model exactly (same
state_dict after the ``weights_key_map``, same outputs).  Like torchvision, those presets build
the backbone's BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1) rather than the
classification model's (1e-3, 0.01); fine-tuning from ImageNet weights inherits that quirk.

Training recipe knobs: ``trainable_layers`` (stages counted from the deepest, as torchvision's
``trainable_backbone_layers``; ``None`` trains everything) and ``frozen_bn`` (swap the backbone's
BatchNorm for FrozenBatchNorm2d, torchvision's choice for pretrained backbones and what its COCO
checkpoints contain).  Any plain-valued torchvision keyword (RPN/ROI thresholds, top-n, batch
sizes, ``image_mean``...) passes through; module-valued ones (``rpn_head``, ``box_predictor``...)
are not configurable, to keep ``model.config`` plain data.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from ..errors import ConfigError, InputError
from ..features import FeatureInfo, FeatureSpec, FreezableBackbone
from ..inputs import check_image_list, checks_skipped
from ..norms import freeze_batchnorm, set_batchnorm
from ..validation import check_bool, check_choice, check_int_list, check_positive_int
from ._base import Requirements, requires
from ._fpn import BackboneWithFPN
from ._levels import feature_info_of, input_channels
from ._options import torchvision_detection_key_map

__all__ = ["fasterrcnn_fpn", "maskrcnn_fpn"]  # the registered builders (the classes are importable too)


class CheckedImages:
    """Placed before torchvision's detector class: the images are checked before torchvision sees them.

    torchvision broadcasts a one-channel image to three (its normalisation has three means), fails
    with ``IndexError`` on an empty list and deep inside ``interpolate`` for an image so elongated
    that its resize leaves the shorter side 0 px; here each is an InputError that says what to pass.
    An empty list is refused rather than answered with ``[]``, as torchvision refuses it: a caller
    that batches nothing has a bug worth hearing about.
    """

    def forward(self, images: Any, targets: Any = None) -> Any:
        check_image_list(images, self, channels=input_channels(self.backbone.body))
        if not checks_skipped():
            _check_targets(images, targets, training=self.training)
            _check_resized_sizes(images, self.transform)
        return super().forward(images, targets)


class FasterRCNNFPN(CheckedImages, FasterRCNN):
    """torchvision's FasterRCNN whose ``forward`` checks its images first (see :class:`CheckedImages`)."""


class MaskRCNNFPN(CheckedImages, MaskRCNN):
    """torchvision's MaskRCNN whose ``forward`` checks its images first (see :class:`CheckedImages`)."""


def _check_targets(images: Any, targets: Any, *, training: bool) -> None:
    if training and targets is None:
        raise InputError("a detector in train() mode needs targets (a list with one {'boxes', 'labels'} dict "
                         "per image); call model.eval() to predict")
    if targets is not None and (not isinstance(targets, (list, tuple)) or len(targets) != len(images)):
        count = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise InputError(f"expected one target dict per image ({len(images)}), got {count}")


def _check_resized_sizes(images: Any, transform: nn.Module) -> None:
    """Refuse an image torchvision's resize would shrink to 0 px on a side (mirrors its arithmetic).

    The resize scales by ``min(min_size / shorter, max_size / longer)`` and floors, so an image
    whose longer side is more than ``max_size`` times its shorter side comes out 0 px high (or wide).
    """
    if getattr(transform, "fixed_size", None) is not None or (
            transform.training and getattr(transform, "_skip_resize", False)):
        return
    targets = transform.min_size if transform.training else transform.min_size[-1:]
    for index, image in enumerate(images):
        height, width = int(image.shape[-2]), int(image.shape[-1])
        shorter, longer = min(height, width), max(height, width)
        for size in targets:
            scale = min(size / shorter, transform.max_size / longer)
            resized = math.floor(shorter * scale)
            if resized < 1:
                raise InputError(
                    f"image {index} is {height}x{width}: the detector resizes it so the longer side is at most "
                    f"max_size={transform.max_size}, which leaves the shorter side {resized} px; a side may be "
                    f"at most {transform.max_size} times the other: crop or pad the image, or build the "
                    "detector with a larger max_size")


class SafeAnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator, except that no call moves its anchors for good.

    torchvision converts ``cell_anchors`` (a plain list, not buffers) to each call's device and
    dtype and keeps the result: one call on ``meta`` left them there, and every later call failed
    with "Cannot copy out of meta tensor"; a float16 call rounded them.  Here every call converts
    the anchors as built, and converted copies are kept per (dtype, device), except on ``meta``.
    """

    def __init__(self, sizes: Any, aspect_ratios: Any):
        super().__init__(sizes, aspect_ratios)
        self._built = list(self.cell_anchors)
        self._converted: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        converted = self._converted.get((dtype, device))
        if converted is None:
            converted = [anchors.to(dtype=dtype, device=device) for anchors in self._built]
            if device.type != "meta":
                self._converted[(dtype, device)] = converted
        self.cell_anchors = converted


@dataclass(frozen=True)
class _Preset:
    """One row of the preset table in the module docstring."""

    backbone_preset: str             # what the backbone is asked for
    levels: int                      # how many of the deepest levels feed the FPN
    anchor_sizes: tuple[int, ...] | None  # same sizes on every pyramid level; None: from strides
    defaults: Mapping[str, Any] = field(default_factory=dict)  # torchvision keyword defaults


_TORCHVISION_ANCHORS = (32, 64, 128, 256, 512)
_TORCHVISION_BN_EPS, _TORCHVISION_BN_MOMENTUM = 1e-5, 0.1  # nn.BatchNorm2d's defaults
_PRESETS: dict[str, _Preset] = {
    "default": _Preset("default", 3, None),
    "torchvision": _Preset("torchvision", 2, _TORCHVISION_ANCHORS, {"rpn_score_thresh": 0.05}),
    "torchvision_320": _Preset("torchvision", 2, _TORCHVISION_ANCHORS, {
        "min_size": 320, "max_size": 640, "rpn_pre_nms_top_n_test": 150, "rpn_post_nms_top_n_test": 150,
        "rpn_score_thresh": 0.05}),
}
# Keywords of the torchvision class vertebra sets itself, or that take modules (not plain config data).
_NOT_PASSED = {"self", "backbone", "num_classes", "min_size", "max_size", "kwargs", "rpn_anchor_generator",
               "rpn_head", "box_roi_pool", "box_head", "box_predictor", "mask_roi_pool", "mask_head",
               "mask_predictor", "anchor_generator", "head", "proposal_matcher", "size"}


def plain_keywords(cls: type) -> dict[str, Any]:
    """The plain-valued keywords of ``cls`` a user may set, with torchvision's defaults."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in _NOT_PASSED and p.kind is p.POSITIONAL_OR_KEYWORD}


def _detection_requirements(*, preset: str = "default", levels: Sequence[str] | None = None, **_) -> Requirements:
    row = _PRESETS[check_choice(preset, tuple(_PRESETS), "preset")]
    backbone_kwargs = {"preset": "torchvision"} if row.backbone_preset == "torchvision" else {}
    if levels is None:
        return Requirements(backbone_kwargs=backbone_kwargs, min_levels=row.levels)
    if not isinstance(levels, (list, tuple)) or not levels or not all(isinstance(n, str) for n in levels) \
            or len(set(levels)) != len(levels):
        raise ConfigError(f"must be a non-empty list of distinct level names such as ['C4', 'C5'], "
                          f"got {levels!r}", path="levels")
    return Requirements(backbone_kwargs=backbone_kwargs, names=tuple(levels), min_levels=len(levels))


@requires(_detection_requirements)
def fasterrcnn_fpn(backbone: nn.Module, *, num_classes: int = 91, preset: str = "default",
                   levels: Sequence[str] | None = None, fpn_channels: int = 256,
                   anchor_sizes: Sequence[Sequence[int]] | None = None,
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), trainable_layers: int | None = None,
                   frozen_bn: bool = False, min_size: int | Sequence[int] | None = None,
                   max_size: int | None = None,
                   **detector_kwargs: Any) -> FasterRCNN:
    """Faster R-CNN (torchvision's) over a feature pyramid built from the backbone's levels.

    Args:
        num_classes: classes including background (91 = COCO's id space, as torchvision).
        preset: ``"default"``, ``"torchvision"`` or ``"torchvision_320"`` (MobileNetV3 only).
        levels: level names feeding the FPN, e.g. ``["C4", "C5"]``; ``None``: the preset's.
        fpn_channels: width of every pyramid level.
        anchor_sizes: one tuple of sizes per pyramid level (the chosen levels plus ``"pool"``), each
            level the same count; ``None``: the preset's.
        aspect_ratios: height/width ratios of the anchors, the same on every level.
        trainable_layers: backbone stages left trainable, counted from the deepest; ``None`` = all.
        frozen_bn: use FrozenBatchNorm2d in the backbone (for fine-tuning pretrained weights).
        min_size, max_size: the resize torchvision's transform applies; ``None``: the preset's
            (800/1333, or 320/640 for ``"torchvision_320"``).  A list of ``min_size`` values picks
            one at random per training batch (multi-scale training, as torchvision).
        **detector_kwargs: plain-valued torchvision ``FasterRCNN`` keywords (``rpn_score_thresh``,
            ``box_detections_per_img``, ...); anything else is a ConfigError listing the valid ones.
    """
    return _build(FasterRCNNFPN, "fasterrcnn_fpn", backbone, locals())  # every argument above, by name


@requires(_detection_requirements)
def maskrcnn_fpn(backbone: nn.Module, *, num_classes: int = 91, preset: str = "default",
                 levels: Sequence[str] | None = None, fpn_channels: int = 256,
                 anchor_sizes: Sequence[Sequence[int]] | None = None,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), trainable_layers: int | None = None,
                 frozen_bn: bool = False, min_size: int | Sequence[int] | None = None,
                 max_size: int | None = None,
                 **detector_kwargs: Any) -> MaskRCNN:
    """Mask R-CNN (Faster R-CNN plus torchvision's mask branch) for instance segmentation.

    Same arguments as :func:`fasterrcnn_fpn`; masks are pooled at 14x14 from the same pyramid
    levels.  torchvision has no MobileNetV3 Mask R-CNN, so the ``torchvision*`` presets only choose
    torchvision's taps and detector settings here.
    """
    return _build(MaskRCNNFPN, "maskrcnn_fpn", backbone, locals())  # every argument above, by name


def _build(cls: type, head: str, backbone: nn.Module, args: dict[str, Any]) -> nn.Module:
    check_positive_int(args["num_classes"], "num_classes", minimum=2)
    check_positive_int(args["fpn_channels"], "fpn_channels")
    check_bool(args["frozen_bn"], "frozen_bn")
    row = _PRESETS[args["preset"]]  # checked, with levels, by _detection_requirements
    options = detector_options(cls, head, fasterrcnn_fpn, row.defaults, args)

    chosen = chosen_levels(feature_info_of(backbone), args["levels"], row.levels)
    if args["trainable_layers"] is not None:
        freeze_stages(backbone, args["trainable_layers"], taps_start_stages=row.backbone_preset == "torchvision")
    if row.backbone_preset == "torchvision":
        # torchvision's MobileNetV3 detectors pass norm_layer=nn.BatchNorm2d (or FrozenBatchNorm2d),
        # i.e. eps 1e-5 / momentum 0.1, not the classification model's 1e-3 / 0.01.
        set_batchnorm(backbone, eps=_TORCHVISION_BN_EPS, momentum=_TORCHVISION_BN_MOMENTUM)
    if args["frozen_bn"]:
        freeze_batchnorm(backbone)

    body = BackboneWithFPN(backbone, chosen, args["fpn_channels"])
    names = body.level_names
    sizes = _anchor_sizes(args["anchor_sizes"], row, chosen)
    ratios = check_aspect_ratios(args["aspect_ratios"])
    anchors = SafeAnchorGenerator(sizes, (ratios,) * len(sizes))
    extra = {}
    if issubclass(cls, MaskRCNN):
        extra["mask_roi_pool"] = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
    model = cls(body, num_classes=args["num_classes"], rpn_anchor_generator=anchors,
                box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2), **extra, **options)
    model.weights_key_map = torchvision_detection_key_map()
    return model


def detector_options(cls: type, head: str, builder: Any, defaults: Mapping[str, Any],
                     args: dict[str, Any]) -> dict[str, Any]:
    """Preset ``defaults``, overridden by explicit ``min_size``/``max_size`` and pass-through keywords
    (those ``builder``'s ``**detector_kwargs`` forward to torchvision's ``cls``)."""
    given = dict(args["detector_kwargs"])
    check_plain_keywords(cls, head, builder, given)
    options = {"min_size": 800, "max_size": 1333, **defaults, **given}
    if args["min_size"] is not None:
        size = args["min_size"]
        options["min_size"] = check_int_list(size, "min_size") if isinstance(size, (list, tuple)) \
            else check_positive_int(size, "min_size")
    if args["max_size"] is not None:
        options["max_size"] = check_positive_int(args["max_size"], "max_size")
    return options


def check_plain_keywords(cls: type, head: str, builder: Any, given: Mapping[str, Any]) -> None:
    """A keyword neither ``builder`` nor torchvision's ``cls`` takes is a ConfigError listing both."""
    allowed = plain_keywords(cls)
    unknown = set(given) - set(allowed)
    if unknown:
        explicit = [name for name in inspect.signature(builder).parameters
                    if name not in ("backbone", "detector_kwargs")]
        path = next(iter(unknown)) if len(unknown) == 1 else None
        raise ConfigError.unknown_keys(unknown, [*explicit, *allowed], where=head, path=path)


def chosen_levels(info: FeatureInfo, levels: Sequence[str] | None, default_count: int) -> list[FeatureSpec]:
    """The FPN's levels, shallow to deep; that they exist is ``_detection_requirements``' rule."""
    if levels is None:
        return list(info[-default_count:])
    return [spec for spec in info if spec.name in levels]  # the FPN runs shallow to deep, whatever the order


def freeze_stages(backbone: nn.Module, trainable_layers: int, *, taps_start_stages: bool) -> None:
    """``trainable_layers`` (torchvision's ``trainable_backbone_layers``: stages left trainable, counted
    from the deepest over every level the architecture offers, MobileNetV3: 0..6) as the backbone's
    own ``freeze`` (the one freezing rule).  BatchNorm in the frozen part keeps updating its
    statistics in ``train()``, as torchvision's does; ``frozen_bn=True`` is the option that stops it.
    """
    if not isinstance(backbone, FreezableBackbone):
        raise ConfigError(f"needs a backbone whose stages can be frozen ('all_levels' and 'freeze()', see "
                          f"vertebra.features.FreezableBackbone), which {type(backbone).__name__} is not; "
                          "leave trainable_layers=None", path="trainable_layers")
    count = len(backbone.all_levels)
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) \
            or not 0 <= trainable_layers <= count:
        raise ConfigError(f"must be an integer from 0 (freeze the whole backbone) to {count} "
                          f"(train all of it), or None; got {trainable_layers!r}", path="trainable_layers")
    backbone.freeze(count - trainable_layers, bn="train", taps_start_stages=taps_start_stages)


def _anchor_sizes(given, row: _Preset, chosen: Sequence[FeatureSpec]) -> tuple[tuple[int, ...], ...]:
    names = [spec.name for spec in chosen] + ["pool"]  # + LastLevelMaxPool's "pool"
    if given is None:
        if row.anchor_sizes is not None:
            return (row.anchor_sizes,) * len(names)
        strides = [spec.stride for spec in chosen] + [2 * chosen[-1].stride]
        return tuple((4 * stride, 8 * stride) for stride in strides)
    return check_anchor_sizes(given, names)


def check_anchor_sizes(given, names: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """``anchor_sizes`` as given: one non-empty list of positive sizes per pyramid level in ``names``."""
    count = len(names)
    ok = isinstance(given, (list, tuple)) and len(given) == count and all(
        isinstance(level, (list, tuple)) and level and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in level) for level in given)
    if not ok or len({len(level) for level in given}) != 1:
        raise ConfigError(f"must hold {count} lists (one per pyramid level: "
                          f"{', '.join(names)}), all of the same length, of "
                          f"positive sizes in pixels; got {given!r}", path="anchor_sizes")
    return tuple(tuple(level) for level in given)


def check_aspect_ratios(given) -> tuple[float, ...]:
    if not isinstance(given, (list, tuple)) or not given or not all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in given):
        raise ConfigError(f"must be a non-empty list of positive numbers, got {given!r}",
                          path="aspect_ratios")
    return tuple(float(r) for r in given)
