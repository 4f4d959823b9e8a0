"""vertebra.optimize: every rewrite keeps the model's outputs, and the caller's model is left alone.

BatchNorm statistics are randomised before each comparison (``randomize_norms`` says why).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation
from torchvision.ops.misc import FrozenBatchNorm2d

import vertebra
from vertebra import registry
from vertebra.errors import ConfigError, VertebraError
from vertebra.inference import optimize
from vertebra.inference.fusion import FusedConv2d, SqueezeExciteProject
from optimize_support import assert_same, randomize_norms, settled

SIZE = 64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# -- vertebra backbones and models ------------------------------------------------------------------------
@pytest.mark.parametrize("name, output_stride", [("mobilenet_v3_large", 32), ("efficientnet_b0", 8),
                                                  ("efficientnet_v2_s", 32)])
def test_backbone_outputs_match(name, output_stride):
    """The eager rewrites, one backbone per family (EfficientNet dilated: every depthwise conv carries a
    dilation).  The fused-graph path (on by default) has its own tests in test_optimize_graph.py."""
    backbone = randomize_norms(registry.build_backbone(name, output_stride=output_stride)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    fast = optimize(backbone, graph=False)
    with torch.no_grad():
        assert_same(fast(x), backbone(x))
    report = fast.optimization_report
    assert report["graph_backbones"] == 0 and fast._inference_graph is None
    assert report["folded_bn"] == _count(backbone, nn.BatchNorm2d) > 0
    assert _count(fast, nn.BatchNorm2d) == 0
    assert report["fused_conv"] > 0 and _count(fast, FusedConv2d) >= report["fused_conv"]
    assert report["fused_se"] == _count(backbone, SqueezeExcitation) > 0  # all three families use SE
    assert _count(fast, SqueezeExcitation) == 0


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0"])
def test_tiled_early_stages_give_every_level_of_the_whole_batch(name):
    """Stride-2/4 layers image by image: each level (the tiled C1, C2 too) equals the untiled batch's."""
    backbone = randomize_norms(registry.build_backbone(name)).eval()
    x = torch.randn(3, 3, SIZE, SIZE)
    tiled, whole = optimize(backbone, graph=False), optimize(backbone, tile=False, graph=False)
    assert (tiled.optimization_report["tiled_backbones"], whole.optimization_report["tiled_backbones"]) == (1, 0)
    c2 = backbone.feature_info[backbone.feature_info.names().index("C2")]
    assert tiled._tiled_entries == c2.index + 1 and getattr(whole, "_tiled_entries", 0) == 0
    calls = []
    tiled.features[0].register_forward_hook(lambda module, args, output: calls.append(output.shape[0]))
    with torch.no_grad():
        got, want = tiled(x), whole(x)
        assert calls == [1, 1, 1]  # the stem ran once per image
        assert_same(got, want)
        assert_same(tiled(x[:1]), whole(x[:1]))  # one image: nothing to tile
    assert calls[-1] == 1 and len(calls) == 4
    assert [t.shape for t in got.values()] == [t.shape for t in want.values()]


def test_tiling_is_off_under_compile_autograd_and_training():
    backbone = registry.build_backbone("mobilenet_v3_small").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = optimize(backbone, compile={"backend": "eager"})
    assert compiled.optimization_report["tiled_backbones"] == 0
    fast = optimize(backbone, graph=False)
    calls = []
    fast.features[0].register_forward_hook(lambda module, args, output: calls.append(output.shape[0]))
    x = torch.randn(2, 3, SIZE, SIZE)
    fast(x)  # grad enabled: the plain whole-batch path
    with torch.no_grad():
        fast.train()(x)  # train mode (fold_bn=False would leave batch statistics): whole batch too
        fast.eval()(x)
    assert calls == [2, 2, 1, 1]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
@pytest.mark.parametrize("head", ["classifier", "lraspp", "deeplabv3", "unet"])
def test_classifier_and_segmentation_models_match(head, graph):
    model = randomize_norms(registry.build(head, backbone="mobilenet_v3_large", num_classes=5)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    fast = optimize(model, graph=graph)
    assert fast.optimization_report["graph_backbones"] == int(graph)
    with torch.no_grad():
        expected, actual = model(x), settled(fast, x)
    if isinstance(expected, dict):
        expected, actual = expected["out"], actual["out"]
    assert actual.shape == expected.shape
    assert_same(actual, expected)
    assert _count(fast, nn.BatchNorm2d) == 0


def test_detection_model_matches():
    """Faster R-CNN: the feature pyramid matches closely, and so do the final detections' scores."""
    model = registry.build("fasterrcnn_fpn", backbone="mobilenet_v3_large", num_classes=3,
                           min_size=96, max_size=96)
    model = randomize_norms(model).eval()
    fast = optimize(model)
    assert _count(fast, nn.BatchNorm2d) == 0 and fast.optimization_report["folded_bn"] > 0
    image = torch.rand(3, 96, 96)
    with torch.no_grad():
        assert_same(settled(fast.backbone, image[None]), model.backbone(image[None]))
        expected, actual = model([image])[0], settled(fast, [image])[0]
    assert len(actual["scores"]) == len(expected["scores"])
    torch.testing.assert_close(actual["scores"].sort().values, expected["scores"].sort().values,
                               rtol=1e-3, atol=1e-4)


def test_torchvision_reference_models_match():
    """optimize() is not vertebra-specific: torchvision's own models come out equal too."""
    model = randomize_norms(torchvision.models.mobilenet_v3_small(num_classes=10)).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same(optimize(model)(x), model(x))


# -- the caller's model -----------------------------------------------------------------------------------
def test_callers_model_is_not_mutated():
    model = randomize_norms(registry.build("classifier", backbone="mobilenet_v3_small", num_classes=4))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batchnorms = _count(model, nn.BatchNorm2d)
    fast = optimize(model)
    assert fast is not model
    assert model.training and _count(model, nn.BatchNorm2d) == batchnorms
    after = model.state_dict()
    assert list(after) == list(before)
    for key in before:
        assert torch.equal(after[key], before[key]), key
    assert all(p.is_contiguous() for p in model.parameters())  # not converted to channels_last
    assert not fast.training


def test_inplace_rewrites_the_given_model():
    model = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    reference = copy.deepcopy(model)
    same = optimize(model, inplace=True)
    assert same is model and _count(model, nn.BatchNorm2d) == 0
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same(same(x), reference(x))


# -- each rewrite on its own --------------------------------------------------------------------------------
def test_switches_turn_rewrites_off():
    model = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    plain = optimize(model, fold_bn=False, channels_last=False, fuse=False, graph=False)
    assert plain.optimization_report["graph_backbones"] == 0 and plain._inference_graph is None
    assert _count(plain, nn.BatchNorm2d) == _count(model, nn.BatchNorm2d)
    assert _count(plain, FusedConv2d) == 0 and _count(plain, SqueezeExciteProject) == 0
    assert all(p.is_contiguous() for p in plain.parameters())
    folded = optimize(model, channels_last=False, fuse=False)
    assert _count(folded, nn.BatchNorm2d) == 0 and _count(folded, FusedConv2d) == 0
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert_same(folded(x), model(x))
        assert_same(plain(x), model(x))


def test_channels_last_converts_weights_and_inputs():
    model = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    fast = optimize(model, fuse=False, graph=False)
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        fast(torch.randn(1, 3, SIZE, SIZE))  # an NCHW input ...
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)  # ... arrives NHWC


def test_fold_handles_frozen_batchnorm_and_conv_bias():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    frozen = FrozenBatchNorm2d(6)
    model = randomize_norms(nn.Sequential(conv, frozen, nn.ReLU())).eval()
    fast = optimize(model, fuse=False, channels_last=False)
    assert fast.optimization_report["folded_bn"] == 1 and isinstance(fast[1], nn.Identity)
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        assert_same(fast(x), model(x))


def test_batchnorm_without_running_stats_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    fast = optimize(model, fuse=False, channels_last=False)
    assert fast.optimization_report["folded_bn"] == 0 and isinstance(fast[1], nn.BatchNorm2d)


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(-1.0, 2.0), nn.Hardswish(),
                                        nn.Hardsigmoid(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.GELU(),
                                        nn.GELU(approximate="tanh"), nn.LeakyReLU(0.2), None],
                         ids=lambda a: type(a).__name__ + getattr(a, "approximate", ""))
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_fused_conv_activation_matches(activation, layout):
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4)
    layers = [conv] + ([activation] if activation is not None else [])
    model = nn.Sequential(*layers).eval()
    fast = optimize(model, channels_last=layout == "nhwc")
    assert isinstance(fast[0], FusedConv2d) and fast.optimization_report["fused_conv"] == 1
    if activation is not None:
        assert isinstance(fast[1], nn.Identity)
    x = torch.randn(2, 8, 11, 13) * 3
    with torch.no_grad():
        assert_same(fast(x), model(x))


@pytest.mark.parametrize("size", [56, 5], ids=["matmul-path", "conv-path"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_squeeze_excitation_projection_matches(size, layout):
    """Both execution paths of the fused SE + projection, in both memory layouts."""
    se = SqueezeExcitation(32, 8, scale_activation=nn.Hardsigmoid)
    project = Conv2dNormActivation(32, 16, kernel_size=1, activation_layer=None)
    model = randomize_norms(nn.Sequential(se, project)).eval()
    fast = optimize(model, channels_last=layout == "nhwc")
    assert fast.optimization_report["fused_se"] == 1
    assert isinstance(fast[0], nn.Identity) and isinstance(fast[1], SqueezeExciteProject)
    x = torch.randn(2, 32, size, size)
    with torch.no_grad():
        assert_same(fast(x), model(x))


def test_squeeze_excitation_before_a_strided_conv_is_not_fused():
    model = nn.Sequential(SqueezeExcitation(8, 2), nn.Conv2d(8, 4, 1, stride=2)).eval()
    fast = optimize(model)
    assert fast.optimization_report["fused_se"] == 0 and isinstance(fast[0], SqueezeExcitation)
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        assert_same(fast(x), model(x))


def test_float64_model_is_folded_but_not_fused():
    """The oneDNN fused kernels are float32-only; other dtypes still get folding and channels_last."""
    model = randomize_norms(nn.Sequential(Conv2dNormActivation(3, 8, 3), SqueezeExcitation(8, 2),
                                           Conv2dNormActivation(8, 4, 1, activation_layer=None)))
    model = model.double().eval()
    fast = optimize(model)
    assert fast.optimization_report["fused_conv"] == 0 and _count(fast, FusedConv2d) == 0
    assert fast.optimization_report["fused_se"] == 0
    assert fast.optimization_report["folded_bn"] == 2
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert_same(fast(x), model(x), rtol=1e-10, atol_scale=1e-10)


def test_compile_wraps_the_optimized_model():
    model = randomize_norms(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = optimize(model, compile={"backend": "eager"})
        assert isinstance(fast, torch._dynamo.eval_frame.OptimizedModule)
        assert fast.optimization_report["compiled"] is True
        x = torch.randn(1, 3, 8, 8)
        with torch.no_grad():
            assert_same(fast(x), model(x))


# -- errors and the public entry point ------------------------------------------------------------------------
def test_meta_model_is_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ConfigError, match="meta"):
        optimize(model)


@pytest.mark.parametrize("bad", [{"model": "not a module"}, {"compile": "yes"}])
def test_bad_arguments_are_refused(bad):
    model = bad.pop("model", nn.Conv2d(3, 3, 1))
    with pytest.raises(VertebraError) as info:
        optimize(model, **bad)
    assert isinstance(info.value, ConfigError)


def test_package_attribute_is_the_function():
    """``vertebra.inference.optimize`` is the function, also after its module
    ``vertebra/inference/optimize.py`` was imported; ``vertebra.optimize`` is the backend dispatcher
    (vertebra.deploy.backends) whose default backend is that function."""
    import vertebra.inference.optimize  # noqa: F401  (a submodule import must not shadow the function)
    from vertebra import inference
    from vertebra.deploy.backends import optimize as dispatcher

    assert vertebra.optimize is dispatcher and inference.optimize is optimize
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    assert _count(vertebra.optimize(model), nn.BatchNorm2d) == 0


def test_prepacked_weights_follow_input_shape_and_survive_copies(tmp_path):
    """The oneDNN weight cache is rebuilt for a new input shape and never copied or saved."""
    model = randomize_norms(registry.build_backbone("mobilenet_v3_small")).eval()
    fast = optimize(model, tile=False, graph=False)  # eager rewrites; the stem sees the whole batch
    convs = [m for m in fast.modules() if isinstance(m, FusedConv2d)]
    assert convs and all(conv.prepack for conv in convs)
    with torch.no_grad():
        for shape in [(2, 3, SIZE, SIZE), (1, 3, SIZE + 32, SIZE)]:
            x = torch.randn(*shape)
            assert_same(fast(x), model(x))
            assert convs[0]._packed is not None and convs[0]._packed[0][0] == shape
        clone = copy.deepcopy(fast)  # caches hold opaque oneDNN memory: dropped, not copied
        torch.save(fast, tmp_path / "fast.pt")
        assert_same(clone(x), model(x))
    assert set(fast.state_dict()) == set(clone.state_dict())


def test_fused_conv_takes_an_unbatched_image():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    fast = optimize(model)
    x = torch.randn(3, 9, 9)
    with torch.no_grad():
        assert_same(fast(x), model(x))


def test_compile_disables_prepacking():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = optimize(model, compile={"backend": "eager"})
    assert not fast._orig_mod[0].prepack
