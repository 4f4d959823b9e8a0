"""vertebra's own named checkpoints: torchvision's published ImageNet / COCO weights, as a table.

The URLs are copied from torchvision's weight enums (``torchvision/models/*.py``).  The hash is the
one torchvision itself checks: the hex string after the last ``-`` of the file name, which is a
*prefix* of the file's SHA-256 digest (``torch.hub.HASH_REGEX``; torchvision's builders call
``get_state_dict(check_hash=True)``).  It is only a prefix (8 hex digits, 32 bits): enough to catch
a truncated or wrong file, not a cryptographic guarantee.  Loading uses ``weights_only=True``
regardless, so a tampered file cannot run code.

The built-in plugin registers this table through the ``vertebra_register_weights`` hook, the same
hook a third-party plugin uses for its own checkpoints.  Plain data: no torch is imported here.
"""

from __future__ import annotations

import re
from typing import Any

from .entry import WeightsEntry

__all__ = ["TORCHVISION_ENTRIES"]

_TORCHVISION_URL = "https://download.pytorch.org/models/"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # the same rule as torch.hub.HASH_REGEX


def _torchvision(name: str, origin: str, filename: str, *, backbone: str, head: str = "classifier",
                 num_classes: int = 1000, options: dict[str, Any] | None = None, notes: str = "",
                 **metrics: float) -> WeightsEntry:
    """One table row: a torchvision checkpoint, its hash prefix read from the file name as torch.hub does."""
    match = _HASH_IN_NAME.search(filename)
    assert match, filename  # table typo, caught by the test over every entry
    return WeightsEntry(name=name, url=_TORCHVISION_URL + filename, sha256=match.group(1),
                        backbone=backbone, head=head, num_classes=num_classes,
                        origin=f"torchvision.models.{origin}", metrics=dict(metrics),
                        head_kwargs={"num_classes": num_classes, **(options or {})}, notes=notes)


_VOC = "COCO train2017 images with the 20 Pascal VOC categories (21 classes with background)"
_COCO = "COCO train2017, 91 category ids (torchvision's numbering, background 0)"

# name,                                  torchvision enum member,                  file name
TORCHVISION_ENTRIES = (
    _torchvision("efficientnet_b0.imagenet", "EfficientNet_B0_Weights.IMAGENET1K_V1",
                 "efficientnet_b0_rwightman-7f5810bc.pth", backbone="efficientnet_b0", acc1=77.692, acc5=93.532),
    _torchvision("efficientnet_b1.imagenet", "EfficientNet_B1_Weights.IMAGENET1K_V2",
                 "efficientnet_b1-c27df63c.pth", backbone="efficientnet_b1", acc1=79.838, acc5=94.934),
    _torchvision("efficientnet_b1.imagenet_v1", "EfficientNet_B1_Weights.IMAGENET1K_V1",
                 "efficientnet_b1_rwightman-bac287d4.pth", backbone="efficientnet_b1", acc1=78.642, acc5=94.186),
    _torchvision("efficientnet_b2.imagenet", "EfficientNet_B2_Weights.IMAGENET1K_V1",
                 "efficientnet_b2_rwightman-c35c1473.pth", backbone="efficientnet_b2", acc1=80.608, acc5=95.31),
    _torchvision("efficientnet_b3.imagenet", "EfficientNet_B3_Weights.IMAGENET1K_V1",
                 "efficientnet_b3_rwightman-b3899882.pth", backbone="efficientnet_b3", acc1=82.008, acc5=96.054),
    _torchvision("efficientnet_b4.imagenet", "EfficientNet_B4_Weights.IMAGENET1K_V1",
                 "efficientnet_b4_rwightman-23ab8bcd.pth", backbone="efficientnet_b4", acc1=83.384, acc5=96.594),
    _torchvision("efficientnet_b5.imagenet", "EfficientNet_B5_Weights.IMAGENET1K_V1",
                 "efficientnet_b5_lukemelas-1a07897c.pth", backbone="efficientnet_b5", acc1=83.444, acc5=96.628),
    _torchvision("efficientnet_b6.imagenet", "EfficientNet_B6_Weights.IMAGENET1K_V1",
                 "efficientnet_b6_lukemelas-24a108a5.pth", backbone="efficientnet_b6", acc1=84.008, acc5=96.916),
    _torchvision("efficientnet_b7.imagenet", "EfficientNet_B7_Weights.IMAGENET1K_V1",
                 "efficientnet_b7_lukemelas-c5b4e57e.pth", backbone="efficientnet_b7", acc1=84.122, acc5=96.908),
    _torchvision("efficientnet_v2_s.imagenet", "EfficientNet_V2_S_Weights.IMAGENET1K_V1",
                 "efficientnet_v2_s-dd5fe13b.pth", backbone="efficientnet_v2_s", acc1=84.228, acc5=96.878),
    _torchvision("efficientnet_v2_m.imagenet", "EfficientNet_V2_M_Weights.IMAGENET1K_V1",
                 "efficientnet_v2_m-dc08266a.pth", backbone="efficientnet_v2_m", acc1=85.112, acc5=97.156),
    _torchvision("efficientnet_v2_l.imagenet", "EfficientNet_V2_L_Weights.IMAGENET1K_V1",
                 "efficientnet_v2_l-59c71312.pth", backbone="efficientnet_v2_l", acc1=85.808, acc5=97.788),
    _torchvision("mobilenet_v3_large.imagenet", "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
                 "mobilenet_v3_large-5c1a4163.pth", backbone="mobilenet_v3_large", acc1=75.274, acc5=92.566),
    _torchvision("mobilenet_v3_large.imagenet_v1", "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
                 "mobilenet_v3_large-8738ca79.pth", backbone="mobilenet_v3_large", acc1=74.042, acc5=91.34),
    _torchvision("mobilenet_v3_small.imagenet", "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                 "mobilenet_v3_small-047dcff4.pth", backbone="mobilenet_v3_small", acc1=67.668, acc5=87.402),
    # Dense checkpoints (COCO); their head's own weights_key_map renames torchvision's layout.
    _torchvision("lraspp_mobilenet_v3_large.coco_voc", "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                 "lraspp_mobilenet_v3_large-d234d4ea.pth", backbone="mobilenet_v3_large", head="lraspp",
                 num_classes=21, options={"preset": "torchvision"}, notes=_VOC, miou=57.9, pixel_acc=91.2),
    _torchvision("deeplabv3_mobilenet_v3_large.coco_voc",
                 "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                 "deeplabv3_mobilenet_v3_large-fc3c493d.pth", backbone="mobilenet_v3_large", head="deeplabv3",
                 num_classes=21, options={"preset": "torchvision", "aux_loss": True},
                 notes=f"{_VOC}; includes the auxiliary FCN head", miou=60.3, pixel_acc=91.2),
    _torchvision("fasterrcnn_mobilenet_v3_large_fpn.coco", "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
                 "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth", backbone="mobilenet_v3_large",
                 head="fasterrcnn_fpn", num_classes=91, options={"preset": "torchvision", "frozen_bn": True},
                 notes=f"{_COCO}; images resized to 800-1333", box_map=32.8),
    _torchvision("fasterrcnn_mobilenet_v3_large_320_fpn.coco",
                 "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
                 "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth", backbone="mobilenet_v3_large",
                 head="fasterrcnn_fpn", num_classes=91, options={"preset": "torchvision_320", "frozen_bn": True},
                 notes=f"{_COCO}; images resized to 320-640, 150 RPN proposals at test time", box_map=22.8),
    _torchvision("ssdlite320_mobilenet_v3_large.coco", "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
                 "ssdlite320_mobilenet_v3_large_coco-a79551df.pth", backbone="mobilenet_v3_large",
                 head="ssdlite", num_classes=91, options={"preset": "torchvision"},
                 notes=f"{_COCO}; images resized to 320x320; MobileNetV3 with reduced_tail (the preset's default)",
                 box_map=21.3),
)
