"""Model-zoo tests run torch on one thread.

Measured on the shared 2-core box under load: resnet152 forward+backward at 16 px took 16 s
with torch's default 2 intra-op threads (the threads spin-wait for a core another process
holds) and 1.4 s with one thread.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
