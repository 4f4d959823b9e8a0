"""Bad arguments and bad inputs: each gives a VertebraError subclass whose message says what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vertebra import registry
from vertebra.backbones.efficientnet import efficientnet, efficientnet_b0
from vertebra.backbones.efficientnet_v2 import efficientnet_v2_s
from vertebra.backbones.mobilenetv3 import mobilenet_v3_large, mobilenet_v3_small
from vertebra.errors import ConfigError, InputError, VertebraError
from vertebra.inputs import check_finite

FACTORIES = [efficientnet_b0, efficientnet_v2_s, mobilenet_v3_small]


def _meta(factory, **kwargs):
    with torch.device("meta"):
        return factory(**kwargs)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return mobilenet_v3_small().eval()


@pytest.mark.parametrize("shape, match", [
    ((3, 64, 64), r"\(N, 3, H, W\).*3 dimension"),
    ((1, 1, 64, 64), "expected 3 input channels, got 1"),
    ((1, 3, 16, 64), "too small.*at least 32"),
    ((1, 3, 64, 31), "too small.*at least 32"),
])
def test_bad_input_tensor(backbone, shape, match):
    with pytest.raises(InputError, match=match):
        backbone(torch.zeros(shape))


def _with(value, index=(0, 0, 0, 0)):
    x = torch.rand(1, 3, 32, 32)
    x[index] = value
    return x


# Each wrong input kind -> an InputError with a fragment of the fix (the shared vertebra.inputs check).
BAD_INPUTS = {
    "numpy": (lambda: np.zeros((1, 3, 32, 32), np.float32),
              r"got numpy.ndarray; convert it: \(torch.from_numpy\(x\).permute\(2, 0, 1\).float\(\) / 255\).unsqueeze\(0\) "
              r"for an HxWxC uint8 image"),
    "list": (lambda: [torch.rand(3, 32, 32)], r"got list.*torch.stack\(images\)"),
    "none": (lambda: None, r"got None; pass a float tensor shaped \(N, 3, H, W\), values in \[0, 1\]"),
    "uint8": (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), r"dtype torch.uint8.*x.float\(\) / 255"),
    "int64": (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.int64), r"dtype torch.int64.*x.float\(\) / 255"),
    "bool": (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.bool), r"dtype torch.bool.*x.float\(\)"),
    "float16": (lambda: torch.rand(1, 3, 32, 32).half(),
                r"input is torch.float16 but the model's parameters are torch.float32; pass x.float\(\), "
                r"or convert the model with model.half\(\)"),
    "bfloat16": (lambda: torch.rand(1, 3, 32, 32).bfloat16(), r"torch.bfloat16 .*torch.float32.*model.bfloat16\(\)"),
    "float64": (lambda: torch.rand(1, 3, 32, 32).double(),
                r"input is torch.float64 but the model's parameters are torch.float32; pass x.float\(\)$"),
    "gray": (lambda: torch.rand(1, 1, 32, 32), r"got 1.*not broadcast.*x.expand\(-1, 3, -1, -1\)"),
    "rgba": (lambda: torch.rand(1, 4, 32, 32), r"got 4.*alpha.*x\[:, :3\]"),
    "channels_last_numpy_layout": (lambda: torch.rand(1, 32, 32, 3), r"got 32.*x.permute\(0, 3, 1, 2\)"),
    "one_image": (lambda: torch.rand(3, 32, 32), r"3 dimension.*x.unsqueeze\(0\)"),
    "empty_batch": (lambda: torch.rand(0, 3, 32, 32), r"batch is empty"),
    "nan": (lambda: _with(float("nan")), r"1 non-finite value\(s\) \(1 NaN, 0 infinite\) of 3072"),
    "inf": (lambda: _with(float("inf"), (0, 2, 5, 7)), r"1 non-finite value\(s\) \(0 NaN, 1 infinite\)"),
    "meta": (lambda: torch.rand(1, 3, 32, 32, device="meta"),
             r"input is on meta but the model's parameters are on cpu; a meta tensor has no values"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_kind(backbone, kind):
    make, match = BAD_INPUTS[kind]
    with pytest.raises(InputError, match=match):
        backbone(make())


def test_meta_model_refuses_a_real_input_naming_both_devices():
    with pytest.raises(InputError, match="input is on cpu but the model's parameters are on meta; move it with "
                                         r"x.to\('meta'\)"):
        _meta(mobilenet_v3_small)(torch.rand(1, 3, 32, 32))


def test_a_model_in_another_dtype_takes_inputs_in_that_dtype(backbone):
    half = mobilenet_v3_small().eval().bfloat16()
    assert half(torch.rand(1, 3, 32, 32).bfloat16())["C5"].dtype == torch.bfloat16
    with pytest.raises(InputError, match="input is torch.float32 but the model's parameters are torch.bfloat16; "
                                         r"pass x.bfloat16\(\), or convert the model with model.float\(\)"):
        half(torch.rand(1, 3, 32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts per op: any of the three dtypes is fine
        assert backbone(torch.rand(1, 3, 32, 32).bfloat16())["C5"].shape == (1, 576, 1, 1)


def test_an_input_changed_in_place_is_checked_again(backbone):
    x = torch.rand(1, 3, 32, 32)
    backbone(x)
    x[0, 0, 0, 0] = float("nan")  # same tensor object: the check must not trust its earlier answer
    with pytest.raises(InputError, match="1 non-finite"):
        backbone(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inputs_on_another_device_name_both_and_accelerators_skip_the_value_test():
    model = mobilenet_v3_small().eval()
    with pytest.raises(InputError, match=r"input is on cuda:0 but the model's parameters are on cpu; move it with "
                                         r"x.to\('cpu'\) \(or the model with model.to\('cuda:0'\)\)"):
        model(torch.rand(1, 3, 32, 32, device="cuda"))
    model.cuda()
    with pytest.raises(InputError, match="input is on cpu but the model's parameters are on cuda:0"):
        model(torch.rand(1, 3, 32, 32))
    x = torch.rand(1, 3, 32, 32, device="cuda")
    x[0, 0, 0, 0] = float("nan")  # not tested on an accelerator: the answer would sync every call
    assert torch.isnan(model(x)["C5"]).any()


def test_finite_values_whose_sum_overflows_are_accepted():
    check_finite(torch.full((4, 3, 8, 8), 3e38))  # the cheap sum overflows; the exact count clears it
    check_finite(torch.ones(1, 3, 256, 256).half())  # 196608 > float16's max, summed in float32
    with pytest.raises(InputError, match="2 non-finite value"):
        check_finite(torch.tensor([3e38, 3e38, float("inf"), float("nan")]))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace's deprecation notice
def test_checks_stay_out_of_traced_and_exported_graphs(backbone):
    x = torch.rand(1, 3, 32, 32)
    traced = torch.jit.trace(backbone, x, strict=False)
    exported = torch.export.export(backbone, (x,))
    assert "isfinite" not in str(traced.inlined_graph)
    assert "isfinite" not in str(exported.graph)
    nan = _with(float("nan"))
    assert torch.isnan(traced(nan)["C5"]).any()  # a graph runs whatever it is given


def test_smallest_input_is_fine_and_output_stride_lowers_the_minimum(backbone):
    assert backbone(torch.zeros(1, 3, 32, 32))["C5"].shape[-2:] == (1, 1)
    dilated = _meta(mobilenet_v3_small, output_stride=8).eval()
    with torch.device("meta"):
        assert dilated(torch.zeros(1, 3, 8, 8))["C5"].shape[-2:] == (1, 1)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("value", [7, 64, 0, "16", 16.0, True, None])
def test_bad_output_stride(factory, value):
    with pytest.raises(ConfigError, match=r"output_stride.*one of \(8, 16, 32\)"):
        _meta(factory, output_stride=value)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("value, match", [
    ([5], "out of range.*5 levels"),
    ([-6], "out of range"),
    ([], "non-empty"),
    ([1, 1], "without repeats"),
    (3, "list of integers"),
    (["C3"], "list of integers"),
])
def test_bad_out_indices(factory, value, match):
    with pytest.raises(ConfigError, match=match):
        _meta(factory, out_indices=value)


@pytest.mark.parametrize("factory", [efficientnet_b0, efficientnet_v2_s])
def test_efficientnets_refuse_the_torchvision_preset(factory):
    with pytest.raises(ConfigError, match="preset.*'default'.*no dense"):
        _meta(factory, preset="torchvision")


def test_bad_preset_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="preset: must be one of 'default', 'torchvision', got 'tv'"):
        _meta(mobilenet_v3_large, preset="tv")


@pytest.mark.parametrize("kwargs, match", [
    ({"width_mult": 0}, "width_mult: must be a number in \\(0.0, inf\\)"),
    ({"width_mult": -1.0}, "width_mult"),
    ({"width_mult": "1"}, "width_mult"),
    ({"reduced_tail": 1}, "reduced_tail: must be True or False"),
    ({"drop_path_rate": 1.0}, "drop_path_rate: must be a number in \\[0.0, 1.0\\)"),
    ({"drop_path_rate": -0.1}, "drop_path_rate"),
])
def test_bad_mobilenet_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _meta(mobilenet_v3_large, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"phi": 1, "width_mult": 1.2}, "either phi or width_mult, not both"),
    ({"phi": -1}, "phi: must be a number in \\[0.0, inf\\)"),
    ({"depth_mult": 0}, "depth_mult"),
    ({"resolution": 16}, "resolution: must be an integer of at least 32"),
    ({"drop_path_rate": 2}, "drop_path_rate"),
])
def test_bad_compound_scaling_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _meta(efficientnet, **kwargs)


def test_freeze_arguments_are_checked(backbone):
    with pytest.raises(ConfigError, match="stages must be between 0 and 5"):
        backbone.freeze(stages=6)
    with pytest.raises(ConfigError, match="bn must be 'frozen', 'eval' or 'train'"):
        backbone.freeze(stages=1, bn="off")


def test_registry_turns_unknown_arguments_into_config_errors():
    with pytest.raises(ConfigError, match="width_mult"):
        with torch.device("meta"):
            registry.build_backbone("efficientnet_b0", width_mult=2.0)
    with pytest.raises(VertebraError):
        with torch.device("meta"):
            registry.build_backbone("mobilenet_v3_small", output_stride=4)
