"""Helpers shared by the vertebra.optimize tests (tests/inference/test_optimize*.py)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def randomize_norms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (in place).

    With freshly initialised statistics (mean 0, var 1, gamma 1, beta 0) folding is almost the
    identity, and a wrong fold would pass.
    """
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = module.num_features if hasattr(module, "num_features") else module.weight.numel()
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model


def assert_same(actual, expected, *, rtol=1e-4, atol_scale=1e-5):
    """assert_close with an absolute tolerance relative to the tensor's magnitude (dicts: per key, in order)."""
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key], rtol=rtol, atol_scale=atol_scale)
        return
    atol = atol_scale * max(expected.abs().max().item(), 1e-30)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def settled(model: nn.Module, *args):
    """The output of the third call, autograd off: a fused graph runs unfused for two profiling calls
    first, so an earlier output would not test the fused kernels."""
    with torch.no_grad():
        for _ in range(3):
            out = model(*args)
    return out
