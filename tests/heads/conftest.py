"""Every head test starts from the same random state (one thread comes from tests/conftest.py).

Helpers live in ``heads_helpers.py``.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
