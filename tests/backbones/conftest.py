"""Shared settings for the backbone tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Run each test on one thread: on a small, shared CPU, OpenMP threads spin-waiting for a busy
    core made these small convolutions up to 100x slower (measured: EfficientNet-B3 at 32 px, 2.3 s
    of CPU with 2 threads under load vs 0.03 s with 1).  Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
