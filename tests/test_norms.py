"""vertebra.norms: the one home of the BatchNorm walks backbones, heads and the engine share."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from vertebra.norms import freeze_batchnorm, set_batchnorm


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3, momentum=0.01),
                         nn.Sequential(nn.BatchNorm1d(4), nn.BatchNorm2d(4, momentum=None)))


def test_set_batchnorm_sets_what_it_is_given_and_leaves_the_state_dict():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_batchnorm(model, momentum=0.3)
    assert [m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [0.3, 0.3, None]
    assert model[1].eps == 1e-3  # eps not given: unchanged
    set_batchnorm(model, eps=1e-5, momentum=0.1)
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert model[2][1].momentum is None  # a cumulative average takes no rate
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_freeze_batchnorm_keeps_statistics_and_eps_and_works_on_meta():
    model = _model().eval()
    model[1].running_mean.normal_()
    x = torch.randn(2, 3, 8, 8)
    expected = model[:2](x)
    freeze_batchnorm(model)
    assert isinstance(model[1], FrozenBatchNorm2d) and model[1].eps == 1e-3
    assert isinstance(model[2][0], nn.BatchNorm1d)  # only BatchNorm2d has a frozen twin
    torch.testing.assert_close(model[:2](x), expected)
    with torch.device("meta"):
        meta = _model()
    freeze_batchnorm(meta)
    assert isinstance(meta[1], FrozenBatchNorm2d) and meta[1].running_mean.device.type == "meta"
