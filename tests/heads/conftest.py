"""Every head test starts from the same random state, on one intra-op thread.

One thread: on a small shared CPU machine OpenMP worker threads mostly spin waiting for each other
(measured here: 10-30x more CPU time per forward with 2 threads under load).  Restored after each test.
Helpers live in ``heads_helpers.py``.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
