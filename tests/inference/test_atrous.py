"""Atrous convolutions that skip padding-only taps (``vertebra.inference.atrous``): same values, same
gradients, same state; and graphs recorded at one size stay right at another."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from vertebra import registry
from vertebra.inference.atrous import AtrousConv2d, skip_padding_taps


def _pair(**conv_kwargs) -> tuple[nn.Conv2d, nn.Conv2d]:
    torch.manual_seed(0)
    plain = nn.Conv2d(**conv_kwargs)
    atrous = copy.deepcopy(plain)
    assert skip_padding_taps(atrous) == 1 and type(atrous) is AtrousConv2d
    return plain, atrous


@pytest.mark.parametrize("height, width, dilation, kernel, groups, bias", [
    (14, 14, 24, 3, 1, False),   # both axes reduce: a 1x1 convolution
    (8, 20, 12, 3, 1, True),     # rows only: a 1x3 convolution
    (20, 8, 12, 3, 1, True),     # columns only
    (6, 6, 6, 5, 2, False),      # 5x5, grouped, dilation equal to the size
    (14, 14, 13, 3, 1, True),    # one tap still inside: nothing to skip
])
def test_skipping_padding_taps_keeps_values_and_gradients(height, width, dilation, kernel, groups, bias):
    plain, atrous = _pair(in_channels=8, out_channels=6, kernel_size=kernel, dilation=dilation,
                          padding=dilation * (kernel // 2), groups=groups, bias=bias)
    x = torch.randn(2, 8, height, width, requires_grad=True)
    want, got = plain(x), atrous(x)
    torch.testing.assert_close(got, want)
    input_grads = []
    for out in (want, got):
        out.square().sum().backward()
        input_grads.append(x.grad)
        x.grad = None
    torch.testing.assert_close(input_grads[1], input_grads[0])
    torch.testing.assert_close(atrous.weight.grad, plain.weight.grad)


def test_only_stride_one_same_padded_dilated_convolutions_change():
    keep = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1),                   # not dilated
                         nn.Conv2d(4, 4, 3, padding=4, dilation=2),       # not "same" padding
                         nn.Conv2d(4, 4, 3, padding=2, dilation=2, stride=2),
                         nn.Conv2d(4, 4, 3, padding="same", dilation=2),
                         nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode="reflect"))
    assert skip_padding_taps(keep) == 0
    assert all(type(m) is nn.Conv2d for m in keep)


def test_deeplabv3_aspp_branches_are_atrous_and_state_is_torchvisions():
    model = registry.build("deeplabv3", backbone="mobilenet_v3_small", num_classes=3)
    reference = DeepLabHead(model.classifier[0].convs[0][0].in_channels, 3)
    state = model.classifier.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.state_dict().items()}
    model.classifier.load_state_dict(reference.state_dict(), strict=True)


@pytest.mark.parametrize("head", ["deeplabv3", "deeplabv3plus"])
def test_aspp_heads_equal_their_plain_convolution_selves(head):
    """Both ASPP heads (torchvision's and smp's separable one) at a size where every rate skips."""
    torch.manual_seed(0)
    model = registry.build(head, backbone="mobilenet_v3_small", num_classes=3).eval()
    atrous = [m for m in model.modules() if isinstance(m, AtrousConv2d)]
    assert sorted(m.dilation[0] for m in atrous) == [12, 24, 36]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        got = model(x)["out"]
        for conv in atrous:
            conv.__class__ = nn.Conv2d
        want = model(x)["out"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_a_graph_recorded_at_a_small_size_is_right_at_a_large_one():
    """Tracing and export see the plain convolution: their graph must not bake in a size's shortcut."""
    torch.manual_seed(0)
    _, atrous = _pair(in_channels=4, out_channels=4, kernel_size=3, dilation=6, padding=6)
    small, large = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 16, 16)  # 6 >= 5 skips; 6 < 16 does not
    with torch.no_grad():
        traced = torch.jit.trace(atrous, small)
        torch.testing.assert_close(traced(large), atrous(large))
        size = torch.export.Dim("size", min=2, max=64)
        exported = torch.export.export(atrous, (small,), dynamic_shapes=({2: size, 3: size},)).module()
        torch.testing.assert_close(exported(large), atrous(large))
        torch.testing.assert_close(exported(small), atrous(small))


def test_optimize_folds_batchnorm_into_atrous_convolutions_and_keeps_the_shortcut():
    import vertebra

    torch.manual_seed(0)
    model = registry.build("deeplabv3", backbone="mobilenet_v3_small", num_classes=3).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        want = model(x)["out"]
        fast = vertebra.optimize(model)
        got = fast(x)["out"]
    branches = [branch for branch in fast.classifier[0].convs if isinstance(branch[0], AtrousConv2d)]
    assert len(branches) == 3 and all(isinstance(branch[1], nn.Identity) for branch in branches)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
