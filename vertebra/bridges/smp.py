"""vertebra backbones as segmentation-models-pytorch encoders: ``encoder_name="vertebra-<backbone>"``.

::

    import segmentation_models_pytorch as smp
    from vertebra.bridges.smp import register_encoders

    register_encoders()                       # every registered backbone, as "vertebra-<name>"
    model = smp.create_model("UnetPlusPlus", encoder_name="vertebra-efficientnet_b3",
                             encoder_weights=None, classes=3, encoder_output_stride=16)

smp 0.6 has no registration API: ``get_encoder`` looks names up in the module dict
``segmentation_models_pytorch.encoders.encoders``.  :func:`register_encoders` is the one place
vertebra adds to it, only when called (never at import), and only under the ``vertebra-`` prefix,
so no smp encoder is replaced.

The encoder follows smp's conventions: ``out_channels`` is ``[in_channels, stride 2, stride 4, ...]``
(``depth + 1`` entries), ``forward`` returns the input followed by one map per stage, and
``output_stride`` 8 or 16 is vertebra's own dilation (every vertebra family has it, so every smp
architecture gets it).  A backbone without a stride-2 level (ConvNeXt-style stems) gets an empty
stride-2 map, as smp does for its transformer-style timm encoders.  smp's ``encoder_weights`` must be
``None`` (smp would download from its hub); load vertebra weights into ``model.encoder.backbone``.
DPT is the one architecture that cannot take these encoders: it builds timm ViTs itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from segmentation_models_pytorch.encoders._base import EncoderMixin
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import build_backbone, entry, list_backbones

__all__ = ["PREFIX", "VertebraEncoder", "register_encoders"]

PREFIX = "vertebra-"


class VertebraEncoder(nn.Module, EncoderMixin):
    """A vertebra backbone that speaks smp's encoder protocol.

    Args:
        backbone: the vertebra name (``"efficientnet_b3"``, ``"timm:resnet18"``).
        depth: how many stages smp's decoder reads (1..5).
        output_stride: 8, 16 or 32 (vertebra dilates; smp then skips its own ``make_dilated``).
        in_channels: channels of the input images (smp calls :meth:`set_in_channels` for others).
        backbone_kwargs: further options for the vertebra backbone.
    """

    def __init__(self, backbone: str, depth: int = 5, output_stride: int = 32, in_channels: int = 3,
                 backbone_kwargs: dict[str, Any] | None = None):
        nn.Module.__init__(self)
        EncoderMixin.__init__(self)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 5:
            raise ConfigError(f"encoder_depth must be 1..5 for a vertebra encoder, got {depth!r}", path="depth")
        self.backbone_name, self._backbone_kwargs = backbone, dict(backbone_kwargs or {})
        self._depth, self._output_stride = depth, output_stride
        self._build(in_channels)

    def _build(self, in_channels: int) -> None:
        options = dict(self._backbone_kwargs, output_stride=self._output_stride)
        if in_channels != 3:
            options["in_channels"] = in_channels
        self.backbone = build_backbone(self.backbone_name, **options)
        levels = list(self.backbone.feature_info)
        self._empty_stride2 = bool(levels) and levels[0].stride > 2
        channels = [0] if self._empty_stride2 else []
        channels += [spec.channels for spec in levels]
        if len(channels) < self._depth:
            raise ConfigError(f"vertebra backbone {self.backbone_name!r} has {len(levels)} level(s), smp asked for "
                              f"encoder_depth={self._depth}; use encoder_depth={len(channels)}", path="depth")
        self._in_channels = in_channels
        self._out_channels = [in_channels] + channels[:self._depth]
        self._names = [spec.name for spec in levels]

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """Rebuild the backbone for ``in_channels`` where it takes that option, else smp's own patch
        of the first convolution (``patch_first_conv``)."""
        if in_channels == self._in_channels:
            return
        try:
            self._build(in_channels)
        except ConfigError as exc:
            if not (exc.path or "").endswith("in_channels"):
                raise
            patch_first_conv(self.backbone, new_in_channels=in_channels, pretrained=pretrained)
            self.backbone.in_channels = in_channels  # what the backbone checks its input against
            self._in_channels, self._out_channels[0] = in_channels, in_channels

    def make_dilated(self, output_stride: int) -> None:
        """Nothing to do: the backbone was built with ``output_stride`` (vertebra's own dilation)."""
        if output_stride != self._output_stride:
            raise ConfigError(f"this encoder was built for output_stride={self._output_stride}, smp asked for "
                              f"{output_stride}", path="output_stride")

    def forward(self, x: Tensor) -> list[Tensor]:
        levels = self.backbone(x)
        features = [x]
        if self._empty_stride2:
            features.append(torch.empty(x.shape[0], 0, -(-x.shape[2] // 2), -(-x.shape[3] // 2),
                                        dtype=x.dtype, device=x.device))
        features += [levels[name] for name in self._names]
        return features[:self._depth + 1]


def register_encoders(names: Sequence[str] | None = None) -> list[str]:
    """Make vertebra backbones smp encoders named ``vertebra-<name>``; returns the encoder names added.

    ``names``: the vertebra backbones (bare, ``plugin:name`` or ``timm:...``); ``None`` registers every
    backbone ``registry.list_backbones()`` lists (namespaces such as ``timm:`` are not listed: name
    those you want).  Calling it again is harmless.
    """
    from segmentation_models_pytorch import encoders

    added = []
    for name in list_backbones() if names is None else names:
        entry("backbone", name)  # an unknown name fails here, with suggestions, not inside smp
        encoders.encoders[PREFIX + name] = {"encoder": VertebraEncoder, "params": {"backbone": name},
                                            "pretrained_settings": {}}
        added.append(PREFIX + name)
    return added
