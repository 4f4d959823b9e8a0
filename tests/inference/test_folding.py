"""BatchNorm folding at inference (``vertebra.inference.folding``): when it runs, and that it is right.

"Right" is measured against a float64 run of the same weights: the folded float32 network must be
no further from it than the unfolded float32 network (torchvision's arithmetic) is, up to a small
slack.  Deep random-weight networks amplify rounding, so comparing float32 against float32 at a
fixed tolerance would test luck, not correctness.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from vertebra import registry
from vertebra.inference import inference_folding
from vertebra.inference.folding import FoldingConv2dNormActivation

FAMILIES = ["efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_large", "mobilenet_v3_small"]


def _random_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding changes every weight."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


@pytest.fixture
def batchnorm_calls(monkeypatch) -> list[int]:
    """How many times any BatchNorm (or FrozenBatchNorm2d) ran, counted at the class: a forward hook
    would itself turn folding off (see ``test_forward_hooks_on_the_conv_or_norm_turn_folding_off``)."""
    calls = [0]
    for cls in (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d):
        def counted(self, *args, _forward=cls.forward, **kwargs):
            calls[0] += 1
            return _forward(self, *args, **kwargs)
        monkeypatch.setattr(cls, "forward", counted)
    return calls


def _backbone(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return _random_statistics(registry.build_backbone(name, **kwargs)).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_folded_inference_is_as_close_to_float64_as_torchvisions_arithmetic(name, batchnorm_calls):
    backbone = _backbone(name)
    exact = copy.deepcopy(backbone).double()
    x = torch.randn(2, 3, 64, 72)
    calls = batchnorm_calls
    with torch.no_grad():
        truth = exact(x.double())
        calls[0] = 0
        folded = backbone(x)
        assert calls[0] == 0, "the folded path must not call BatchNorm"
        with inference_folding(False):
            unfolded = backbone(x)
        assert calls[0] > 0
    for level, want in truth.items():
        folded_error = (folded[level].double() - want).abs().max().item()
        unfolded_error = (unfolded[level].double() - want).abs().max().item()
        assert folded_error <= 2 * unfolded_error + 1e-5, level
        assert not torch.equal(folded[level], unfolded[level]) or level == "C1", level


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.parametrize("mode", ["grad", "train", "norm_train", "disabled", "trace"])
def test_batchnorm_runs_as_a_separate_op_when_anything_could_observe_it(mode, batchnorm_calls):
    backbone = _backbone("mobilenet_v3_small")
    calls = batchnorm_calls
    x = torch.randn(1, 3, 64, 64)
    if mode == "grad":  # autograd records BatchNorm's own backward
        backbone(x)
    elif mode == "train":  # batch statistics, running-stat updates
        backbone.train()
        with torch.no_grad():
            backbone(x)
    elif mode == "norm_train":  # BatchNorm alone in train mode (statistics calibration, AdaBN)
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.train()
        with torch.no_grad():
            backbone(x)
    elif mode == "disabled":
        with torch.no_grad(), inference_folding(False):
            backbone(x)
    else:  # exporters see the standard conv / batch_norm graph
        with torch.no_grad():
            graph = torch.jit.trace(backbone, x, strict=False).inlined_graph
        assert "aten::batch_norm" in str(graph)
    assert calls[0] > 0


@pytest.mark.parametrize("where", ["conv", "norm", "conv_pre", "global"])
def test_forward_hooks_on_the_conv_or_norm_turn_folding_off(where, batchnorm_calls):
    """The fold calls neither the conv module nor the norm: a hook on either (a feature probe, a
    quantization observer) or a global module hook must still run, with torchvision's inputs."""
    backbone = _backbone("mobilenet_v3_small")
    stem = backbone.features[0]
    seen = []
    if where == "global":
        handle = nn.modules.module.register_module_forward_hook(
            lambda module, args, output: seen.append(output) if module is stem[1] else None)
    elif where == "conv_pre":
        handle = stem[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    else:
        handle = stem[0 if where == "conv" else 1].register_forward_hook(
            lambda module, args, output: seen.append(output))
    x = torch.randn(1, 3, 64, 64)
    try:
        with torch.no_grad():
            hooked = backbone(x)["C5"]
            with inference_folding(False):  # torchvision's arithmetic, the reference for what the hook saw
                backbone(x)
    finally:
        handle.remove()
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    with torch.no_grad():
        calls_before = batchnorm_calls[0]
        folded = backbone(x)["C5"]  # hook removed: folding is back
        assert batchnorm_calls[0] == calls_before
    torch.testing.assert_close(folded, hooked, rtol=1e-4, atol=1e-4)


def test_folding_sees_weight_changes_at_once():
    """Folded weights are recomputed per call: an in-place update (optimizer, load_state_dict) is never stale."""
    backbone = _backbone("mobilenet_v3_small")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(x)["C5"]
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.mul_(4.0)
        after = backbone(x)["C5"]
        with inference_folding(False):
            expected = backbone(x)["C5"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4)


def test_frozen_batchnorm_folds_too(batchnorm_calls):
    backbone = _backbone("efficientnet_b0").freeze(bn="frozen")
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    calls = batchnorm_calls
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        folded = backbone(x)["C5"]
        assert calls[0] == 0
        with inference_folding(False):
            unfolded = backbone(x)["C5"]
    torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-4)


def test_layers_without_running_statistics_are_left_alone():
    layer = FoldingConv2dNormActivation(4, 8, kernel_size=3,
                                        norm_layer=lambda c: nn.BatchNorm2d(c, track_running_stats=False)).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        got = layer(x)
        with inference_folding(False):
            want = layer(x)
    assert torch.equal(got, want)  # batch statistics: nothing to fold, same op


def test_switch_is_scoped_to_the_thread_and_checks_its_argument():
    seen = []
    with inference_folding(False):
        worker = threading.Thread(target=lambda: seen.append(_folding_enabled()))
        worker.start()
        worker.join()
        seen.append(_folding_enabled())
    seen.append(_folding_enabled())
    assert seen == [True, False, True]
    with pytest.raises(TypeError, match="True or False"):
        with inference_folding("no"):
            pass


def _folding_enabled() -> bool:
    from vertebra.inference.folding import _FOLDING
    return _FOLDING.get()


def test_state_dict_keys_are_torchvisions():
    """The subclass adds no state: conv ``0``, norm ``1``, exactly as ``Conv2dNormActivation``."""
    from torchvision.ops import Conv2dNormActivation
    ours = FoldingConv2dNormActivation(3, 8, kernel_size=3)
    theirs = Conv2dNormActivation(3, 8, kernel_size=3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
