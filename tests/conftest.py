"""Settings every test shares.

One intra-op thread per test: on a small CPU machine (CI has 2 cores) OpenMP worker threads mostly
spin-wait for each other on these small tensors — measured here, EfficientNet-B3 at 32 px took 2.3 s
of CPU with 2 threads under load and 0.03 s with 1, and the heads matrix went from 467 s to ~60 s.
It also keeps CPU runs bit-exact for the resume-equivalence tests.  Restored after each test.
"""

from __future__ import annotations

import signal

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def default_sigint():
    """SIGINT as a ``python`` started from a terminal has it: ``KeyboardInterrupt``.

    A test runner started in the background by a shell without job control (a CI script's ``&``)
    hands SIGINT to its children *ignored*, and Python keeps an ignored SIGINT; the tests that send
    a real Ctrl-C are about vertebra's handlers, not about how the runner was started.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
