"""The rest of segmentation-models-pytorch 0.6's decoders, on vertebra backbones (see :mod:`.smp_decoders`).

Same wiring as the first four: smp's own decoder and ``SegmentationHead`` (the kernel size smp's
model uses), fed ``[input image] + one level per distinct stride``, logits resized to the input.

==================  =====================================  ==========================================
head                asks the backbone for                  input size
==================  =====================================  ==========================================
``unetplusplus``    strides 2-16, deepest at 16 or 32      divisible by the deepest stride (nested
                                                           skips upsample by exactly 2)
``manet``           strides 2-16, deepest at 16 or 32      divisible by the deepest stride
``linknet``         strides 2-16, deepest at 16 or 32      divisible by the deepest stride
                                                           (transposed convs double exactly)
``pspnet``          nothing (the deepest level)            any
``pan``             strides 2-8, deepest at 16 or 32       at least 8x the deepest stride (its
                    (16 unless the backbone sets it)       pyramid attention max-pools 3 times)
``segformer``       three levels or more                   any
==================  =====================================  ==========================================

smp's DPT is not a head here: its decoder reassembles a ViT's token maps (one stride for every
level, plus prefix/class tokens) and smp builds it only on timm ViT encoders; vertebra's families
are CNN pyramids, so there is nothing for it to read.
"""

from __future__ import annotations

from collections.abc import Sequence

from segmentation_models_pytorch.decoders.linknet.decoder import LinknetDecoder
from segmentation_models_pytorch.decoders.manet.decoder import MAnetDecoder
from segmentation_models_pytorch.decoders.pan.decoder import PANDecoder
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPDecoder
from segmentation_models_pytorch.decoders.segformer.decoder import SegformerDecoder
from segmentation_models_pytorch.decoders.unetplusplus.decoder import UnetPlusPlusDecoder
from torch import nn

from ..validation import check_bool, check_choice, check_positive_int, check_range
from ._base import Requirements, output_stride_requirements, requires
from ._levels import input_channels
from .smp_decoders import SmpSegmentation, block_channels, decoder_levels, encoder_channels, smp_model

__all__ = ["unetplusplus", "manet", "linknet", "pspnet", "pan", "segformer"]

# U-shaped decoders whose blocks upsample by exactly 2 and then concatenate / add the next skip:
# every stride from 2 up must be there (no gap), and the input must divide by the deepest stride.
_U_SHAPED = Requirements(output_strides=(16, 32), strides=(2, 4, 8, 16), min_levels=4)
_EXACT = "its decoder upsamples by exactly 2 per level"


def _exact(levels) -> dict:
    return {"divisor": levels[-1].stride, "why": _EXACT}


@requires(lambda **_: _U_SHAPED)
def unetplusplus(backbone: nn.Module, *, num_classes: int = 21, decoder_channels: Sequence[int] | None = None,
                 attention: str | None = None, center: bool = False) -> SmpSegmentation:
    """smp's UNet++ (Zhou et al. 2018): nested, densely connected skip pathways between the scales.

    Args:
        num_classes: output channels.
        decoder_channels: one width per decoder block (as many as the backbone has scales);
            ``None``: smp's (256, 128, 64, 32, 16), cut to the number of scales.
        attention: ``None`` or ``"scse"``.
        center: smp's extra centre block on the deepest level.
    """
    check_positive_int(num_classes, "num_classes")
    check_choice(attention, (None, "scse"), "attention")
    check_bool(center, "center")
    levels = decoder_levels(backbone)
    channels = block_channels(decoder_channels, levels)
    decoder = UnetPlusPlusDecoder(encoder_channels(levels, input_channels(backbone)), channels,
                                  n_blocks=len(channels), attention_type=attention, center=center)
    return smp_model("unetplusplus", backbone, levels, decoder, channels[-1], num_classes, kernel_size=3,
                     **_exact(levels))


@requires(lambda **_: _U_SHAPED)
def manet(backbone: nn.Module, *, num_classes: int = 21, decoder_channels: Sequence[int] | None = None,
          pab_channels: int = 64) -> SmpSegmentation:
    """smp's MA-Net (Fan et al. 2020): position-wise attention on the deepest level, multi-scale attention fusion.

    Args:
        num_classes: output channels.
        decoder_channels: one width per decoder block; ``None``: smp's, cut to the number of scales.
        pab_channels: width of the position attention block.
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(pab_channels, "pab_channels")
    levels = decoder_levels(backbone)
    channels = block_channels(decoder_channels, levels)
    decoder = MAnetDecoder(encoder_channels(levels, input_channels(backbone)), channels, n_blocks=len(channels),
                           pab_channels=pab_channels)
    return smp_model("manet", backbone, levels, decoder, channels[-1], num_classes, kernel_size=3,
                     **_exact(levels))


@requires(lambda **_: _U_SHAPED)
def linknet(backbone: nn.Module, *, num_classes: int = 21, prefinal_channels: int = 32) -> SmpSegmentation:
    """smp's LinkNet (Chaurasia & Culurciello 2017): transposed-conv blocks that *add* each skip (light).

    Args:
        num_classes: output channels.
        prefinal_channels: width of the last decoder block (smp: 32).
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(prefinal_channels, "prefinal_channels")
    levels = decoder_levels(backbone)
    decoder = LinknetDecoder(encoder_channels(levels, input_channels(backbone)), prefinal_channels=prefinal_channels,
                             n_blocks=len(levels))
    return smp_model("linknet", backbone, levels, decoder, prefinal_channels, num_classes, **_exact(levels))


@requires(lambda **_: Requirements(min_levels=1))
def pspnet(backbone: nn.Module, *, num_classes: int = 21, psp_out_channels: int = 512,
           dropout: float = 0.2) -> SmpSegmentation:
    """smp's PSPNet (Zhao et al. 2017): pyramid pooling (1, 2, 3, 6 bins) on the deepest returned level.

    smp's PSPNet cuts its encoder at stride 8 (``encoder_depth=3``); here the deepest level is
    whatever the backbone returns: pass ``backbone.out_indices`` up to the stride-8 level for smp's
    choice, or ``backbone.output_stride=8`` for the paper's dilated one.

    Args:
        num_classes: output channels.
        psp_out_channels: width after the pyramid pooling.
        dropout: spatial dropout before the classifier.
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(psp_out_channels, "psp_out_channels")
    check_range(dropout, "dropout", low=0, high=1)
    levels = decoder_levels(backbone)
    decoder = PSPDecoder(encoder_channels(levels, input_channels(backbone)), out_channels=psp_out_channels,
                         dropout=dropout)
    return smp_model("pspnet", backbone, levels, decoder, psp_out_channels, num_classes, kernel_size=3)


@requires(lambda **_: output_stride_requirements(None, (16, 32), strides=(2, 4, 8), min_levels=4))
def pan(backbone: nn.Module, *, num_classes: int = 21, decoder_channels: int = 32) -> SmpSegmentation:
    """smp's PAN (Li et al. 2018): feature pyramid attention on the deepest level, global attention upsampling.

    Like smp's, the backbone is dilated to output stride 16 unless ``backbone.output_stride`` says
    32.  The attention block max-pools the deepest map three times, so the input must be at least
    8x the deepest stride on each side.

    Args:
        num_classes: output channels.
        decoder_channels: width of the attention blocks (smp: 32).
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(decoder_channels, "decoder_channels")
    levels = decoder_levels(backbone)
    decoder = PANDecoder(encoder_channels(levels, input_channels(backbone)), encoder_depth=len(levels),
                         decoder_channels=decoder_channels)
    return smp_model("pan", backbone, levels, decoder, decoder_channels, num_classes, kernel_size=3,
                     min_size=8 * levels[-1].stride,
                     why="its pyramid attention max-pools the deepest level three times")


@requires(lambda **_: Requirements(min_levels=3))
def segformer(backbone: nn.Module, *, num_classes: int = 21, segmentation_channels: int = 256) -> SmpSegmentation:
    """smp's SegFormer decoder (Xie et al. 2021): a linear layer per level, all resized to stride 4, fused.

    Args:
        num_classes: output channels.
        segmentation_channels: width of every projected level and of the fused map.
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(segmentation_channels, "segmentation_channels")
    levels = decoder_levels(backbone)
    decoder = SegformerDecoder(encoder_channels(levels, input_channels(backbone)), encoder_depth=len(levels),
                               segmentation_channels=segmentation_channels)
    return smp_model("segformer", backbone, levels, decoder, segmentation_channels, num_classes)
