"""vertebra backbones as smp encoders: every smp architecture, smp's own create_model and forward."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch import encoders as smp_encoders

from vertebra.bridges.smp import VertebraEncoder, register_encoders
from vertebra.errors import UnknownNameError

ENCODERS = ("mobilenet_v3_small", "timm:convnext_atto")  # a built-in family; a timm bridge without stride 2
# smp's own rules per architecture: the output strides its encoder_output_stride takes (only the
# DeepLabs and PAN have one; the others run at 32), and the smallest input that survives its pooling
# (PAN pools the deepest map three more times).  DPT builds timm ViTs itself: it takes no other encoder.
ARCHITECTURES = {
    "Unet": (32,), "UnetPlusPlus": (32,), "MAnet": (32,), "Linknet": (32,), "FPN": (32,), "PSPNet": (32,),
    "UPerNet": (32,), "Segformer": (32,), "DeepLabV3": (16, 8), "DeepLabV3Plus": (16, 8), "PAN": (32, 16),
}


@pytest.fixture(scope="module")
def encoder_names():
    names = register_encoders(ENCODERS)
    yield names
    for name in names:
        smp_encoders.encoders.pop(name, None)


def test_every_smp_architecture_but_dpt_is_covered():
    assert set(ARCHITECTURES) | {"DPT"} == {cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_runs_with_two_vertebra_encoders(arch, encoder_names):
    for encoder in encoder_names:
        for output_stride in ARCHITECTURES[arch]:
            torch.manual_seed(0)
            stride = {} if len(ARCHITECTURES[arch]) == 1 else {"encoder_output_stride": output_stride}
            model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=2, **stride).eval()
            assert isinstance(model.encoder, VertebraEncoder)
            assert model.encoder.output_stride == min(output_stride, 2 ** model.encoder._depth)
            size = 8 * output_stride if arch == "PAN" else 64
            with torch.no_grad():
                assert model(torch.rand(1, 3, size, size)).shape == (1, 2, size, size)
    model.train()  # the last one also trains: gradients reach the vertebra backbone
    model(torch.rand(2, 3, size, size)).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.backbone.parameters())


def test_smp_conventions_channels_depth_and_input_channels(encoder_names):
    encoder = VertebraEncoder("timm:convnext_atto", depth=4, output_stride=16)
    assert encoder.out_channels == [3, 0, 40, 80, 160]  # an empty stride-2 map, as smp's own timm encoders
    features = encoder(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in features] == [(3, 64, 64), (0, 32, 32), (40, 16, 16), (80, 8, 8),
                                                      (160, 4, 4)]
    model = smp.Unet(encoder_name=encoder_names[0], encoder_weights=None, in_channels=1, classes=1, encoder_depth=3,
                     decoder_channels=(32, 16, 8))
    assert model.encoder.out_channels == [1, 16, 16, 24] and model.encoder.backbone.in_channels == 1
    assert model.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_unknown_backbones_fail_at_registration():
    with pytest.raises(UnknownNameError, match="mobilenet_v3_small"):
        register_encoders(["mobilenet_v3_smal"])
