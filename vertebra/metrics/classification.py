"""Top-k accuracy, for one batch (:func:`topk_accuracy`) or accumulated over a data set (:class:`TopKAccuracy`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError, InputError

__all__ = ["topk_accuracy", "TopKAccuracy"]


def _correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """How many samples have their target among the top-k logits, for each k (int64 tensor)."""
    if logits.dim() != 2 or targets.dim() != 1 or logits.shape[0] != targets.shape[0]:
        raise InputError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}; expected (N, C) "
                         f"and (N,)")
    if targets.is_floating_point():
        raise InputError(f"targets must be class indices (integers), got {targets.dtype}")
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers, got {tuple(ks)!r}")
    # with k >= C every sample is correct; clamp rather than fail so top-5 works for 3 classes
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == targets[:, None]
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ...}``: the fraction (0-1) of samples whose target is in the top k."""
    correct = _correct(logits, targets, ks)
    return {f"top{k}": float(c) / max(len(targets), 1) for k, c in zip(ks, correct)}


class TopKAccuracy:
    """:func:`topk_accuracy` over many batches; state is one int64 tensor, so DDP is one all_reduce."""

    def __init__(self, ks: Sequence[int] = (1, 5)):
        self.ks = tuple(ks)
        self.counts = torch.zeros(len(self.ks) + 1, dtype=torch.int64)  # correct per k, then total

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        correct = _correct(logits, targets, self.ks)
        self.counts = self.counts.to(correct.device)
        self.counts[:-1] += correct
        self.counts[-1] += len(targets)

    def synchronize(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.counts)

    def reset(self) -> None:
        self.counts.zero_()

    def compute(self) -> dict[str, float]:
        total = max(int(self.counts[-1]), 1)
        return {f"top{k}": int(c) / total for k, c in zip(self.ks, self.counts[:-1])}
