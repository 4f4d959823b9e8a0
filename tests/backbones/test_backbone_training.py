"""Training-time features: stochastic depth, gradient checkpointing, freezing, channels_last,
torch.compile and torch.export.  Small variants at 64 px keep this quick."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from vertebra import registry
from vertebra.backbones._blocks import FusedMBConv, InvertedResidual, MBConv

SMALLEST = ["efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_small"]
_BLOCKS = (MBConv, FusedMBConv, InvertedResidual)


def _blocks(backbone):
    return [m for m in backbone.features.modules() if isinstance(m, _BLOCKS)]


def _loss(out) -> torch.Tensor:
    return sum(level.square().mean() for level in out.values())


# -- stochastic depth ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_large"])
def test_drop_path_rate_rises_linearly_with_block_index(name):
    with torch.device("meta"):
        backbone = registry.build_backbone(name, drop_path_rate=0.3)
    blocks = _blocks(backbone)
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx([0.3 * i / len(blocks) for i in range(len(blocks))])
    assert any(b.use_res_connect for b in blocks) and not all(b.use_res_connect for b in blocks)


def test_efficientnet_default_drop_path_is_torchvisions_and_mobilenet_has_none():
    with torch.device("meta"):
        last = _blocks(registry.build_backbone("efficientnet_b0"))[-1]
        assert last.stochastic_depth.p == pytest.approx(0.2 * 15 / 16)
        assert {b.stochastic_depth.p for b in _blocks(registry.build_backbone("mobilenet_v3_small"))} == {0.0}


def test_drop_path_only_drops_residual_blocks_and_only_in_training():
    torch.manual_seed(0)
    backbone = registry.build_backbone("efficientnet_b0", drop_path_rate=0.9)
    blocks = _blocks(backbone)
    residual = next(b for b in reversed(blocks) if b.use_res_connect)
    plain = next(b for b in reversed(blocks) if not b.use_res_connect)
    for block in (residual, plain):
        block.train()
        x = torch.randn(16, block.block[0][0].in_channels, 8, 8)
        first, second = block(x), block(x)
        if block is residual:  # independent per-sample drops: two passes differ
            assert not torch.allclose(first, second)
        else:  # a block without a skip connection is never dropped
            torch.testing.assert_close(first, second)
        block.eval()
        torch.testing.assert_close(block(x), block(x))


def test_eval_calls_stochastic_depth_as_torchvision_does():
    """Stochastic depth is the identity in eval, and still called (as torchvision's blocks do): a hook on it runs."""
    block = next(b for b in _blocks(registry.build_backbone("efficientnet_b0")) if b.use_res_connect).eval()
    x = torch.randn(1, block.block[0][0].in_channels, 8, 8)
    seen = []
    handle = block.stochastic_depth.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        hooked = block(x)
        handle.remove()
        assert len(seen) == 1
        torch.testing.assert_close(block(x), hooked, rtol=0, atol=0)
    assert len(seen) == 1


# -- gradient checkpointing ---------------------------------------------------------------------
def _saved_bytes(model, x) -> tuple[int, torch.Tensor]:
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
    return total, _loss(out)


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small"])
def test_grad_checkpointing_saves_memory_and_keeps_gradients(name):
    torch.manual_seed(0)
    plain = registry.build_backbone(name)
    checkpointed = copy.deepcopy(plain).set_grad_checkpointing(True)
    assert checkpointed.grad_checkpointing
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)  # same stochastic-depth draws in both; checkpointing replays them in backward
    plain_bytes, plain_loss = _saved_bytes(plain, x)
    torch.manual_seed(1)
    ckpt_bytes, ckpt_loss = _saved_bytes(checkpointed, x)
    assert ckpt_bytes < 0.5 * plain_bytes
    plain_loss.backward()
    ckpt_loss.backward()
    torch.testing.assert_close(ckpt_loss, plain_loss)
    for (pname, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=pname)


def test_grad_checkpointing_is_off_without_grad():
    backbone = registry.build_backbone("mobilenet_v3_small").set_grad_checkpointing(True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = backbone.set_grad_checkpointing(False)(x)
        got = backbone.set_grad_checkpointing(True)(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])


# -- freezing -----------------------------------------------------------------------------------
def _frozen_prefix(backbone, stages):
    last = backbone.all_levels[stages - 1].index
    return list(backbone.features)[: last + 1], list(backbone.features)[last + 1:]


@pytest.mark.parametrize("name", SMALLEST)
def test_freeze_eval_keeps_frozen_part_fixed_while_training(name):
    torch.manual_seed(0)
    backbone = registry.build_backbone(name).freeze(stages=2, bn="eval")
    frozen, trainable = _frozen_prefix(backbone, 2)
    assert not any(p.requires_grad for layer in frozen for p in layer.parameters())
    assert all(p.requires_grad for layer in trainable for p in layer.parameters())
    backbone.train()
    frozen_bns = [m for layer in frozen for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    trainable_bns = [m for layer in trainable for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bns and not any(m.training for m in frozen_bns)
    assert all(m.training for m in trainable_bns)
    before = copy.deepcopy(backbone.features[: len(frozen)].state_dict())
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    _loss(backbone(torch.randn(2, 3, 64, 64))).backward()
    optimizer.step()
    after = backbone.features[: len(frozen)].state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, msg=key)


def test_freeze_frozen_swaps_batchnorm_and_keeps_outputs():
    torch.manual_seed(0)
    backbone = registry.build_backbone("mobilenet_v3_small").eval()
    for module in backbone.modules():  # non-trivial statistics so a wrong swap shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 1.5)
            module.running_mean.normal_(0, 0.1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = backbone(x)
    backbone.freeze(stages=3, bn="frozen")
    frozen, trainable = _frozen_prefix(backbone, 3)
    assert any(isinstance(m, FrozenBatchNorm2d) for layer in frozen for m in layer.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for layer in frozen for m in layer.modules())
    assert all(not isinstance(m, FrozenBatchNorm2d) for layer in trainable for m in layer.modules())
    with torch.no_grad():
        got = backbone(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])


def test_freeze_train_and_all():
    backbone = registry.build_backbone("mobilenet_v3_small").freeze(stages=1, bn="train").train()
    assert all(m.training for m in backbone.modules() if isinstance(m, nn.BatchNorm2d))
    backbone.freeze()
    assert not any(p.requires_grad for p in backbone.parameters())


# -- memory format, compilers -------------------------------------------------------------------
@pytest.mark.parametrize("name", SMALLEST)
def test_channels_last_gives_same_features(name):
    torch.manual_seed(0)
    backbone = registry.build_backbone(name, output_stride=16).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = backbone(x)
        backbone = backbone.to(memory_format=torch.channels_last)
        got = backbone(x.to(memory_format=torch.channels_last))
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)
    assert got["C5"].is_contiguous(memory_format=torch.channels_last)


def test_torch_compile_fullgraph_aot_eager():
    """torch.compile without graph breaks; backend aot_eager (inductor's C++ build takes ~100 s here)."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    backbone = registry.build_backbone("mobilenet_v3_small")
    compiled = torch.compile(backbone, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 3, 64, 64)
    backbone.eval()
    with torch.no_grad():
        expected, got = backbone(x), compiled(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])
    backbone.train()
    _loss(compiled(x)).backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_torch_export_round_trip():
    torch.manual_seed(0)
    backbone = registry.build_backbone("mobilenet_v3_small", output_stride=16).eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(backbone, (x,))
    with torch.no_grad():
        expected = backbone(x)
        got = exported.module()(x)
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name])
