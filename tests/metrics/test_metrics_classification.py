"""Top-k accuracy, per batch and accumulated."""

from __future__ import annotations

import pytest
import torch

from vertebra.errors import ConfigError, InputError
from vertebra.metrics import TopKAccuracy, topk_accuracy

LOGITS = torch.tensor([[0.1, 0.9, 0.0, 0.0],   # top1 = 1
                       [0.5, 0.1, 0.3, 0.2],   # ranks: 0, 2, 3, 1
                       [0.0, 0.1, 0.2, 0.7]])  # ranks: 3, 2, 1, 0


def test_known_values():
    targets = torch.tensor([1, 2, 0])
    assert topk_accuracy(LOGITS, targets, ks=(1, 2, 3)) == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3),
                                                            "top3": pytest.approx(2 / 3)}
    assert topk_accuracy(LOGITS, targets, ks=(4, 5)) == {"top4": 1.0, "top5": 1.0}  # k >= classes


def test_accumulated_equals_one_big_batch():
    generator = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(20, 7, generator=generator), torch.randint(0, 7, (20,), generator=generator)
    meter = TopKAccuracy((1, 5))
    for chunk in range(0, 20, 6):
        meter.update(logits[chunk:chunk + 6], targets[chunk:chunk + 6])
    assert meter.compute() == pytest.approx(topk_accuracy(logits, targets, (1, 5)))
    meter.reset()
    assert meter.compute() == {"top1": 0.0, "top5": 0.0}


def test_bad_inputs():
    with pytest.raises(InputError, match="expected"):
        topk_accuracy(LOGITS, torch.tensor([1, 2]))
    with pytest.raises(InputError, match="integers"):
        topk_accuracy(LOGITS, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ConfigError, match="ks"):
        topk_accuracy(LOGITS, torch.tensor([1, 2, 0]), ks=(0,))
