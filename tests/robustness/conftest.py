"""One torch thread: on the shared 2-core box, small ops with two OpenMP threads spend most of their time waiting."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
