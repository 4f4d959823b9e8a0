"""segmentation-models-pytorch decoders with vertebra backbones as their encoders.

smp's decoders take the list an smp encoder returns: ``[stride 1, stride 2, stride 4, ...]``, the
first entry being the input image itself (smp's encoders return ``x`` there; Unet reads only its
size, the others ignore it).  vertebra builds the same list from the feature contract:

    ``[input image] + one level per distinct stride, shallow to deep``

Where dilation leaves two levels at one stride (``output_stride=16``: C4 and C5), the deeper one is
used.  The decoder and smp's ``SegmentationHead`` are smp's own classes (module names ``decoder``
and ``segmentation_head`` as in smp's models); logits are resized to the input size, so every model
returns ``{"out": logits at input size}``.

=================  ==================================  ============================================
head               asks the backbone for               input size
=================  ==================================  ============================================
``unet``           nothing (any levels)                any
``fpn``            output_stride 32, strides 4-32      divisible by 32 (the decoder upsamples by 2)
``deeplabv3plus``  output_stride 16 (or 8), strides 2, 4 divisible by the output stride
``upernet``        output_stride 16 or 32, strides 2-8  any
=================  ==================================  ============================================
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, InputError
from ..features import FeatureSpec
from ._base import Requirements, output_stride_requirements, requires
from ._levels import deepest_per_stride, feature_info_of, input_channels
from ..inputs import check_batch, checks_skipped
from ..validation import check_bool, check_choice, check_int_list, check_positive_int, check_range


__all__ = ["unet", "fpn", "deeplabv3plus", "upernet"]

_UNET_CHANNELS = (256, 128, 64, 32, 16)  # smp's default, one per decoder block


class SmpSegmentation(nn.Module):
    """backbone -> smp feature list -> smp decoder -> smp SegmentationHead -> logits at input size."""

    def __init__(self, backbone: nn.Module, levels: Sequence[FeatureSpec], decoder: nn.Module,
                 head: nn.Module, *, divisor: int = 1, min_size: int = 1, name: str = "smp",
                 why: str = "its decoder upsamples by exact factors"):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.segmentation_head = head
        self.level_names = [spec.name for spec in levels]
        self.divisor = divisor
        self.min_size = min_size
        self.head_name = name
        self.why = why

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        check_batch(x, self, channels=input_channels(self.backbone))
        self._check_size(x)
        features = self.backbone(x)
        logits = self.segmentation_head(self.decoder([x] + [features[name] for name in self.level_names]))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        result: OrderedDict[str, Tensor] = OrderedDict()
        result["out"] = logits
        return result

    def _check_size(self, x: Tensor) -> None:
        if (self.divisor == 1 and self.min_size == 1) or checks_skipped():
            return
        height, width = x.shape[-2:]
        if height < self.min_size or width < self.min_size:
            raise InputError(
                f"{self.head_name} needs height and width of at least {self.min_size} ({self.why}), got "
                f"{height}x{width}; resize or pad the input to at least {self.min_size}x{self.min_size}")
        if height % self.divisor or width % self.divisor:
            padded = (-(-height // self.divisor) * self.divisor, -(-width // self.divisor) * self.divisor)
            raise InputError(
                f"{self.head_name} needs height and width divisible by {self.divisor} ({self.why}), got "
                f"{height}x{width}; pad the input to {padded[0]}x{padded[1]} "
                "(e.g. torch.nn.functional.pad) or resize it")


def decoder_levels(backbone: nn.Module) -> list[FeatureSpec]:
    """The decoder's scales: one level per stride (the strides each head needs are its requirements)."""
    return deepest_per_stride(feature_info_of(backbone))


def encoder_channels(levels: Sequence[FeatureSpec], in_channels: int) -> list[int]:
    return [in_channels] + [spec.channels for spec in levels]


def block_channels(given: Sequence[int] | None, levels: Sequence[FeatureSpec]) -> tuple[int, ...]:
    """One width per decoder block of a U-shaped decoder: ``given``, or smp's default cut to the scales."""
    if given is not None:
        return tuple(check_int_list(given, "decoder_channels", length=len(levels)))
    if len(levels) > len(_UNET_CHANNELS):
        raise ConfigError(f"the backbone has {len(levels)} scales; pass decoder_channels with {len(levels)} "
                          "widths", path="decoder_channels")
    return _UNET_CHANNELS[:len(levels)]


@requires(lambda **_: Requirements(min_levels=1))
def unet(backbone: nn.Module, *, num_classes: int = 21, decoder_channels: Sequence[int] | None = None,
         attention: str | None = None, interpolation: str = "nearest") -> SmpSegmentation:
    """smp's U-Net decoder: one upsampling block per backbone scale, skip connections at each.

    Args:
        num_classes: output channels.
        decoder_channels: one width per decoder block (as many as the backbone has scales);
            ``None``: smp's (256, 128, 64, 32, 16), truncated to the number of scales.
        attention: ``None`` or ``"scse"`` (smp's decoder_attention_type).
        interpolation: upsampling mode inside the decoder (``"nearest"`` or ``"bilinear"``).
    """
    check_positive_int(num_classes, "num_classes")
    check_choice(attention, (None, "scse"), "attention")
    check_choice(interpolation, ("nearest", "bilinear"), "interpolation")
    levels = decoder_levels(backbone)
    channels = block_channels(decoder_channels, levels)
    decoder = UnetDecoder(encoder_channels(levels, input_channels(backbone)), channels, n_blocks=len(channels),
                          attention_type=attention, interpolation_mode=interpolation)
    return smp_model("unet", backbone, levels, decoder, channels[-1], num_classes, kernel_size=3)


@requires(lambda **_: Requirements(backbone_kwargs={"output_stride": 32}, output_strides=(32,),
                                   strides=(4, 8, 16, 32), min_levels=4))
def fpn(backbone: nn.Module, *, num_classes: int = 21, pyramid_channels: int = 256,
        segmentation_channels: int = 128, merge_policy: str = "add", dropout: float = 0.2) -> SmpSegmentation:
    """smp's semantic FPN (Kirillov et al., Panoptic FPN): levels at strides 4-32 merged at stride 4.

    Args:
        num_classes: output channels.
        pyramid_channels, segmentation_channels: widths of the pyramid and of the merged branch.
        merge_policy: ``"add"`` or ``"cat"`` the four upsampled branches.
        dropout: spatial dropout before the classifier.
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(pyramid_channels, "pyramid_channels")
    check_positive_int(segmentation_channels, "segmentation_channels", minimum=32)
    if segmentation_channels % 32:  # smp normalises the merged branch with GroupNorm(32 groups, channels)
        below = segmentation_channels // 32 * 32
        raise ConfigError(f"must be a multiple of 32 (smp's FPN normalises the merged branch with GroupNorm in "
                          f"32 groups), got {segmentation_channels}; e.g. {below} or {below + 32}",
                          path="segmentation_channels")
    check_choice(merge_policy, ("add", "cat"), "merge_policy")
    check_range(dropout, "dropout", low=0, high=1)
    levels = [spec for spec in decoder_levels(backbone) if spec.stride in (4, 8, 16, 32)]
    decoder = FPNDecoder(encoder_channels(levels, input_channels(backbone)), encoder_depth=len(levels),
                         pyramid_channels=pyramid_channels, segmentation_channels=segmentation_channels,
                         dropout=dropout, merge_policy=merge_policy)
    return smp_model("fpn", backbone, levels, decoder, decoder.out_channels, num_classes, divisor=32)


def _deeplabv3plus_requirements(*, output_stride: int | None = None, **_) -> Requirements:
    return output_stride_requirements(output_stride, (8, 16), strides=(2, 4), min_levels=3)


@requires(_deeplabv3plus_requirements)
def deeplabv3plus(backbone: nn.Module, *, num_classes: int = 21, output_stride: int | None = None,
                  decoder_channels: int = 256, atrous_rates: Sequence[int] = (12, 24, 36),
                  aspp_separable: bool = True, aspp_dropout: float = 0.5) -> SmpSegmentation:
    """smp's DeepLabV3+: ASPP on the deepest level (dilated to ``output_stride``) fused with stride 4.

    Args:
        num_classes: output channels.
        output_stride: 16 or 8; the registry builds the backbone dilated to it.  ``None``: the
            backbone's ``output_stride`` if the user set it (8 or 16), else 16.
        decoder_channels: ASPP width.
        atrous_rates: three ASPP dilation rates.
        aspp_separable: depthwise-separable ASPP convolutions (smp's default for DeepLabV3+).
        aspp_dropout: dropout after the ASPP projection.
    """
    check_positive_int(num_classes, "num_classes")  # output_stride: checked by _deeplabv3plus_requirements
    check_positive_int(decoder_channels, "decoder_channels")
    rates = check_int_list(atrous_rates, "atrous_rates", length=3)
    check_bool(aspp_separable, "aspp_separable")
    check_range(aspp_dropout, "aspp_dropout", low=0, high=1)
    levels = decoder_levels(backbone)
    output_stride = levels[-1].stride  # the head's or the backbone's choice, checked by the requirements
    # smp's decoder reads features[2] (stride 4) and features[-1] (the deepest level).
    decoder = DeepLabV3PlusDecoder(encoder_channels(levels, input_channels(backbone)), encoder_depth=5,
                                   out_channels=decoder_channels, atrous_rates=rates, output_stride=output_stride,
                                   aspp_separable=aspp_separable, aspp_dropout=aspp_dropout)
    return smp_model("deeplabv3plus", backbone, levels, decoder, decoder_channels, num_classes, divisor=output_stride)


@requires(lambda **_: Requirements(output_strides=(16, 32), strides=(2, 4, 8), min_levels=4))
def upernet(backbone: nn.Module, *, num_classes: int = 21, decoder_channels: int = 256) -> SmpSegmentation:
    """smp's UPerNet (Xiao et al. 2018): PSP on the deepest level + FPN from stride 4 up, fused at stride 4.

    Resizes by interpolation, so any input size works.

    Args:
        num_classes: output channels.
        decoder_channels: width of the PSP/FPN branches.
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(decoder_channels, "decoder_channels")
    levels = decoder_levels(backbone)  # stride 2, 4, 8 and a deeper one for the PSP module: the requirements
    decoder = UPerNetDecoder(encoder_channels(levels, input_channels(backbone)), encoder_depth=len(levels),
                             decoder_channels=decoder_channels)
    return smp_model("upernet", backbone, levels, decoder, decoder_channels, num_classes)


def smp_model(name: str, backbone: nn.Module, levels: Sequence[FeatureSpec], decoder: nn.Module,
           decoder_channels: int, num_classes: int, *, kernel_size: int = 1, **size_rule) -> SmpSegmentation:
    """Wrap with smp's SegmentationHead (the kernel size each smp model uses: 3x3 after U-Net...)."""
    head = SegmentationHead(decoder_channels, num_classes, kernel_size=kernel_size)
    return SmpSegmentation(backbone, levels, decoder, head, name=name, **size_rule)

