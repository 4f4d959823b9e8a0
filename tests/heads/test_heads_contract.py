"""What heads ask of backbones, and every way a request can be refused with a useful error."""

from __future__ import annotations

import pytest
import torch

from heads_helpers import HEADS, SMALLEST
from vertebra import registry
from vertebra.backbones.mobilenetv3 import mobilenet_v3_small
from vertebra.errors import ConfigError, IncompatibleError, InputError
from vertebra.heads import detection, segmentation, smp_decoders

MOBILENETS = ["mobilenet_v3_large", "mobilenet_v3_small"]
_TORCHVISION_VARIANTS = [
    ("lraspp", {"preset": "torchvision"}),
    ("deeplabv3", {"preset": "torchvision", "aux_loss": True}),
    ("fasterrcnn_fpn", {"preset": "torchvision"}),
    ("fasterrcnn_fpn", {"preset": "torchvision_320"}),
    ("maskrcnn_fpn", {"preset": "torchvision"}),
    ("ssdlite", {"preset": "torchvision"}),
]


@pytest.mark.parametrize("head, kwargs", [(head, {}) for head in HEADS] + _TORCHVISION_VARIANTS)
def test_every_pair_compatible_rejects_is_refused_with_incompatible_error(head, kwargs):
    fits = registry.compatible(head, **kwargs)
    rejected = sorted(set(registry.list_backbones()) - set(fits))
    for name in rejected:
        with pytest.raises(IncompatibleError, match=head):
            registry.build(head, backbone=name, **kwargs)
    if kwargs.get("preset", "default").startswith("torchvision"):
        assert fits == MOBILENETS  # torchvision's tap points exist for MobileNetV3 only
    else:
        assert set(SMALLEST) <= set(fits)  # test_heads_matrix builds and runs exactly these


@pytest.mark.parametrize("head, backbone, kwargs, match", [
    ("lraspp", {"output_stride": 32}, {}, r"stride 8 or 16.*output_stride=8 or 16"),
    ("deeplabv3", {"output_stride": 32}, {}, r"output_stride=8 or 16"),
    ("deeplabv3plus", {"output_stride": 32}, {}, r"output_stride=8 or 16"),
    ("pan", {"output_stride": 8}, {}, r"output_stride=16 or 32"),
    ("unetplusplus", {"output_stride": 8}, {}, r"output_stride=16 or 32"),
    ("manet", {"out_indices": [0, 2, 3, 4]}, {}, r"stride 4.*out_indices"),
    ("linknet", {"output_stride": 8}, {}, r"output_stride=16 or 32"),
    ("segformer", {"out_indices": [3, 4]}, {}, r"at least 3"),
    ("fcn", {"out_indices": [4]}, {"aux_loss": True}, r"stride 8"),
    ("ssdlite", {"output_stride": 16}, {}, r"output_stride=32"),
    ("ssdlite", {"out_indices": [4]}, {}, r"stride 16"),
    ("retinanet_fpn", {"out_indices": [3, 4]}, {}, r"at least 3"),
    ("fcos_fpn", {}, {"levels": ["C4", "C9"]}, r"'C9'"),
    ("lraspp", {"out_indices": [3, 4]}, {}, r"stride 8.*out_indices"),
    ("deeplabv3", {"output_stride": 16}, {"output_stride": 8}, r"output_stride=8"),
    ("deeplabv3", {"out_indices": [4]}, {"aux_loss": True}, r"stride 8"),
    ("fpn", {"output_stride": 16}, {}, r"output_stride=32"),
    ("deeplabv3plus", {"out_indices": [2, 3, 4]}, {}, r"stride 2, 4|stride 2"),
    ("upernet", {"out_indices": [3, 4]}, {}, r"stride"),
    ("fasterrcnn_fpn", {"out_indices": [4]}, {}, r"at least 3"),
    ("fasterrcnn_fpn", {}, {"levels": ["C3", "C9"]}, r"'C9'.*levels="),
])
def test_incompatible_requests_name_the_fix(head, backbone, kwargs, match):
    with pytest.raises(IncompatibleError, match=match):
        registry.build(head, backbone={"name": "mobilenet_v3_small", **backbone}, **kwargs)


def test_builders_called_directly_check_the_output_stride():
    with pytest.raises(IncompatibleError, match=r"output_stride=8 or 16 \(or leave it unset"):
        segmentation.lraspp(mobilenet_v3_small())  # not dilated: the registry would have asked for 16
    with pytest.raises(IncompatibleError, match=r"output_stride=8 or 16"):
        smp_decoders.deeplabv3plus(mobilenet_v3_small())


@pytest.mark.parametrize("head, kwargs, path", [
    ("lraspp", {"preset": "tv"}, "preset"),
    ("lraspp", {"num_classes": 0}, "num_classes"),
    ("deeplabv3", {"output_stride": 32}, "output_stride"),
    ("deeplabv3", {"atrous_rates": [6, "12"]}, "atrous_rates"),
    ("deeplabv3", {"aux_loss": "yes"}, "aux_loss"),
    ("fasterrcnn_fpn", {"preset": "torchvision_640"}, "preset"),
    ("fasterrcnn_fpn", {"anchor_sizes": [[32], [64]]}, "anchor_sizes"),
    ("fasterrcnn_fpn", {"anchor_sizes": [[32], [64], [128], [256, 512]]}, "anchor_sizes"),
    ("fasterrcnn_fpn", {"aspect_ratios": []}, "aspect_ratios"),
    ("fasterrcnn_fpn", {"trainable_layers": 7}, "trainable_layers"),
    ("fasterrcnn_fpn", {"levels": ["C4", "C4"]}, "levels"),
    ("fasterrcnn_fpn", {"min_size": 0}, "min_size"),
    ("fasterrcnn_fpn", {"min_size": [64, 0]}, "min_size"),
    ("maskrcnn_fpn", {"num_classes": 1}, "num_classes"),
    ("maskrcnn_fpn", {"frozen_bn": 1}, "frozen_bn"),
    ("unet", {"decoder_channels": [64, 32]}, "decoder_channels"),
    ("unet", {"attention": "cbam"}, "attention"),
    ("fpn", {"dropout": 1.5}, "dropout"),
    ("fpn", {"merge_policy": "mean"}, "merge_policy"),
    ("deeplabv3plus", {"atrous_rates": [6, 12]}, "atrous_rates"),
    ("upernet", {"decoder_channels": -1}, "decoder_channels"),
])
def test_bad_head_options_are_config_errors_naming_the_option(head, kwargs, path):
    with pytest.raises(ConfigError) as info:
        registry.build(head, backbone="mobilenet_v3_small", **kwargs)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_unknown_detector_keywords_list_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small", rpn_scor_thresh=0.1, rpn_head=None)
    message = str(info.value)
    assert "'rpn_head'" in message and "'rpn_scor_thresh'" in message
    assert "did you mean 'rpn_score_thresh'" in message
    valid = message.split("valid arguments: ")[1].split(", ")
    assert {"rpn_score_thresh", "box_detections_per_img", "trainable_layers", "levels", "min_size"} <= set(valid)
    assert "rpn_head" not in valid and "backbone" not in valid  # modules are not configurable
    with pytest.raises(ConfigError) as info:
        registry.build_from_config({"head": "maskrcnn_fpn", "backbone": "mobilenet_v3_small",
                                    "box_nms_tresh": 0.4}, path="model")
    assert info.value.path == "model.box_nms_tresh"


def test_detector_keywords_pass_through_and_override_the_preset():
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small", preset="torchvision_320",
                           rpn_score_thresh=0.2, box_detections_per_img=7, max_size=512)
    assert model.rpn.score_thresh == 0.2
    assert model.roi_heads.detections_per_img == 7
    assert model.transform.min_size == (320,) and model.transform.max_size == 512
    assert model.rpn._pre_nms_top_n["testing"] == 150  # untouched preset value
    multi_scale = registry.build("maskrcnn_fpn", backbone="mobilenet_v3_small", min_size=[64, 80])
    assert multi_scale.transform.min_size == (64, 80) and multi_scale.transform.max_size == 1333


def test_default_pyramid_levels_anchors_and_roi_pooling():
    model = registry.build("maskrcnn_fpn", backbone="efficientnet_b0")
    assert model.backbone.level_names == ["C3", "C4", "C5"]
    assert model.backbone.fpn.inner_blocks[0][0].in_channels == 40  # derived from feature_info, not typed
    assert model.rpn.anchor_generator.sizes == ((32, 64), (64, 128), (128, 256), (256, 512))
    assert model.roi_heads.box_roi_pool.featmap_names == ["C3", "C4", "C5"]
    assert model.roi_heads.mask_roi_pool.featmap_names == ["C3", "C4", "C5"]
    features = model.backbone(torch.randn(1, 3, 64, 96))
    assert {k: v.shape[-2:] for k, v in features.items()} == {
        "C3": (8, 12), "C4": (4, 6), "C5": (2, 3), "pool": (1, 2)}


def test_levels_option_picks_and_orders_pyramid_levels():
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_small", levels=["C5", "C4"],
                           anchor_sizes=[[48], [96], [192]])
    assert model.backbone.level_names == ["C4", "C5"]  # shallow to deep, whatever order was given
    assert model.rpn.anchor_generator.sizes == ((48,), (96,), (192,))
    assert model.rpn.head.cls_logits.out_channels == 3  # one size x three ratios per location


@pytest.mark.parametrize("head, size", [("fpn", (97, 131)), ("deeplabv3plus", (72, 72))])
def test_decoders_with_exact_upsampling_refuse_sizes_they_cannot_take(head, size):
    model = registry.build(head, backbone="mobilenet_v3_small").eval()
    with pytest.raises(InputError, match=r"pad the input to \d+x\d+"):
        model(torch.randn(1, 3, *size))


@pytest.mark.parametrize("head", ["unet", "upernet", "lraspp", "deeplabv3"])
def test_interpolating_heads_take_any_size(head):
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131))["out"].shape == (1, 2, 97, 131)


def test_feature_less_module_is_incompatible():
    with pytest.raises(IncompatibleError, match="feature_info"):
        detection.fasterrcnn_fpn(torch.nn.Conv2d(3, 8, 3))


def test_the_issue_example_takes_the_backbones_output_stride():
    """A head that supports several output strides accepts the one the user gave the backbone."""
    with torch.device("meta"):
        model = registry.build("deeplabv3", backbone={"name": "efficientnet_v2_s", "output_stride": 8}, num_classes=5)
        assert model.backbone.feature_info.strides()[-1] == 8
        assert registry.build("lraspp", backbone={"name": "mobilenet_v3_small", "output_stride": 8}) \
            .backbone.feature_info.strides()[-1] == 8
        assert registry.build("lraspp", backbone="mobilenet_v3_small").backbone.output_stride == 16  # its pick
    assert "output_stride=16 unless the backbone sets it" in registry.describe("deeplabv3").requirements.needs()


@pytest.mark.parametrize("head, size, message", [
    ("unetplusplus", (72, 96), r"divisible by 32.*pad the input to 96x96"),
    ("linknet", (64, 100), r"divisible by 32"),
    ("pan", (96, 128), r"at least 128 .*max-pools"),
])
def test_new_decoders_refuse_sizes_they_cannot_take(head, size, message):
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=2).eval()
    with pytest.raises(InputError, match=message):
        model(torch.randn(1, 3, *size))


@pytest.mark.parametrize("head", ["pspnet", "segformer", "fcn"])
def test_new_interpolating_heads_take_any_size(head):
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131))["out"].shape == (1, 2, 97, 131)


@pytest.mark.parametrize("head, kwargs, path", [
    ("fcos_fpn", {"fpn_channels": 48}, "fpn_channels"),
    ("ssdlite", {"size": [320]}, "size"),
    ("retinanet_fpn", {"anchor_sizes": [[32]] * 4}, "anchor_sizes"),
    ("retinanet_fpn", {"box_score_thresh": 0.1}, "box_score_thresh"),  # a Faster R-CNN keyword
])
def test_one_stage_options_are_checked(head, kwargs, path):
    with pytest.raises(ConfigError) as info:
        with torch.device("meta"):
            registry.build(head, backbone="mobilenet_v3_small", **kwargs)
    assert info.value.path == path


def test_dpt_is_not_offered():
    """smp's DPT reads a ViT's uniform-stride token maps; no vertebra family has them (see heads.smp_more)."""
    assert "dpt" not in registry.list_heads()
