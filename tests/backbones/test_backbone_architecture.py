"""The papers' rules, stated as tests (torchvision parity covers them too; these say *which* rule)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torchvision.ops import SqueezeExcitation

from vertebra.backbones import efficientnet as efficientnet_module
from vertebra.backbones import make_divisible
from vertebra.backbones._flops import count_macs
from vertebra.backbones.efficientnet import STAGES, VARIANTS, efficientnet, efficientnet_b0, efficientnet_b3
from vertebra.backbones.efficientnet_v2 import efficientnet_v2_l, efficientnet_v2_s
from vertebra.backbones.mobilenetv3 import mobilenet_v3_large, mobilenet_v3_small


def _meta(factory, **kwargs):
    with torch.device("meta"):
        return factory(**kwargs)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@given(st.floats(1.0, 4096.0), st.sampled_from([8, 16]))
def test_make_divisible_rounds_to_the_divisor_and_never_loses_10_percent(value, divisor):
    rounded = make_divisible(value, divisor)
    assert rounded % divisor == 0 and rounded >= divisor
    assert rounded >= 0.9 * value
    assert rounded <= max(divisor, value + divisor)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_efficientnet_repeats_round_up_and_widths_follow_the_table(name):
    variant = VARIANTS[name]
    backbone = _meta(getattr(efficientnet_module, name))
    stages = list(backbone.features)[1:-1]
    assert [len(stage) for stage in stages] == [math.ceil(row.layers * variant.depth) for row in STAGES]
    assert [stage[-1].out_channels for stage in stages] == \
        [make_divisible(row.out_channels * variant.width, 8) for row in STAGES]
    assert backbone.feature_info[-1].channels == 4 * make_divisible(320 * variant.width, 8)
    assert backbone.meta.default_size == variant.resolution
    assert backbone.meta.classifier_dropout == variant.dropout


def test_efficientnet_se_squeezes_the_block_input_not_the_expansion():
    block = _meta(efficientnet_b0).features[2][0]  # 16 -> expand 96 -> 24
    se = next(m for m in block.modules() if isinstance(m, SqueezeExcitation))
    assert (se.fc1.in_channels, se.fc1.out_channels) == (96, 4)
    assert isinstance(se.activation, nn.SiLU) and isinstance(se.scale_activation, nn.Sigmoid)


def test_mobilenet_se_is_a_quarter_of_the_expansion_with_hard_sigmoid():
    block = _meta(mobilenet_v3_large).features[4]  # 24 -> expand 72 -> 40, SE
    se = next(m for m in block.modules() if isinstance(m, SqueezeExcitation))
    assert (se.fc1.in_channels, se.fc1.out_channels) == (72, make_divisible(72 // 4, 8))
    assert isinstance(se.scale_activation, nn.Hardsigmoid)


@pytest.mark.parametrize("factory", [efficientnet_b3, efficientnet_v2_s, mobilenet_v3_large])
def test_residual_only_on_stride_1_equal_width_blocks_and_dilation_keeps_it(factory):
    dense = [m for m in _meta(factory).modules() if hasattr(m, "use_res_connect")]
    dilated = [m for m in _meta(factory, output_stride=8).modules() if hasattr(m, "use_res_connect")]
    assert len(dense) == len(dilated) > 10
    for block, twin in zip(dense, dilated):
        paper_stride = max(m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d))
        in_channels = block.block[0][0].in_channels
        assert block.use_res_connect == (paper_stride == 1 and in_channels == block.out_channels)
        assert twin.use_res_connect == block.use_res_connect


@pytest.mark.parametrize("factory", [efficientnet_b0, efficientnet_v2_s, mobilenet_v3_small])
def test_dilation_replaces_stride_in_every_spatial_conv_beyond_the_output_stride(factory):
    backbone = _meta(factory, output_stride=8)
    dense = _meta(factory)
    stride = 1
    for layer, reference in zip(backbone.features, dense.features):
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        ref_convs = [m for m in reference.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        for conv, ref in zip(convs, ref_convs):
            stride *= ref.stride[0]
            dilation = max(1, stride // 8)
            assert conv.dilation == (dilation, dilation)
            assert conv.stride == ((ref.stride[0], ref.stride[0]) if stride <= 8 else (1, 1))
            assert conv.padding == ((conv.kernel_size[0] - 1) // 2 * dilation,) * 2


def test_compound_scaling_phi_0_is_b0_and_multipliers_rebuild_b3():
    assert _shapes(_meta(efficientnet)) == _shapes(_meta(efficientnet_b0))
    assert _shapes(_meta(efficientnet, width_mult=1.2, depth_mult=1.4)) == _shapes(_meta(efficientnet_b3))
    assert _meta(efficientnet).meta.torchvision_name == "efficientnet_b0"
    assert _meta(efficientnet, phi=1).meta.torchvision_name is None


@pytest.mark.parametrize("phi", [1, 2, 3])
def test_compound_scaling_flops_grow_about_2_to_the_phi(phi):
    base = count_macs(_meta(efficientnet), 224, 224)
    scaled = _meta(efficientnet, phi=phi)
    assert scaled.meta.default_size == round(224 * 1.15 ** phi / 8) * 8
    assert scaled.meta.classifier_dropout == pytest.approx(min(0.5, 0.2 + 0.1 * (phi // 2)))
    ratio = count_macs(scaled, scaled.meta.default_size, scaled.meta.default_size) / base
    assert ratio == pytest.approx(2 ** phi, rel=0.2)


def test_meta_sizes_and_classifier_shapes():
    assert (_meta(efficientnet_v2_s).meta.default_size, _meta(efficientnet_v2_s).meta.eval_size) == (300, 384)
    assert (_meta(efficientnet_v2_l).meta.default_size, _meta(efficientnet_v2_l).meta.eval_size) == (384, 480)
    assert _meta(mobilenet_v3_large).meta.classifier_hidden == 1280
    assert _meta(mobilenet_v3_small).meta.classifier_hidden == 1024
    assert _meta(mobilenet_v3_large, reduced_tail=True).meta.classifier_hidden == 640
    assert _meta(mobilenet_v3_large, width_mult=0.5).meta.classifier_hidden == 640
    assert _meta(mobilenet_v3_large).meta.paper["top1"] == 75.2
    assert _meta(mobilenet_v3_large, width_mult=0.75).meta.paper == {}


def test_count_macs_restores_modes_and_runs_on_real_tensors():
    backbone = mobilenet_v3_small().train()
    backbone.features[3].eval()
    macs = count_macs(backbone, 64, 64)
    assert backbone.training and not backbone.features[3].training
    assert macs == count_macs(_meta(mobilenet_v3_small), 64, 64) > 0
