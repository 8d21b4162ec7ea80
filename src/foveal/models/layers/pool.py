"""Adaptive average pooling that exports to ONNX at every size.

Written by hand because the ONNX exporter refuses `adaptive_avg_pool2d` whose output size does not
divide the input size (LeNet-5 at 20 px pools its 3x3 map up to 5x5; at 64 px 13x13 down to 5x5).
The same average, PyTorch's windows (start = floor(i * n / m), end = ceil((i + 1) * n / m)), is a
fixed (m, n) matrix per axis, so the pooling is two matrix products, which every exporter takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pool_matrix(n: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """(m, n): row i averages input positions [floor(i*n/m), ceil((i+1)*n/m)), as adaptive_avg_pool does."""
    rows = []
    for i in range(m):
        start, end = (i * n) // m, -(-((i + 1) * n) // m)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(n)])
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


class AdaptiveAvgPool(nn.Module):
    """`nn.AdaptiveAvgPool2d(size)` for (B, C, H, W) input, exportable at any H, W (module docstring)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.size == 0 and w % self.size == 0:  # whole windows: the exporter's own op
            return F.adaptive_avg_pool2d(x, self.size)
        return pool_matrix(h, self.size, x) @ x @ pool_matrix(w, self.size, x).T  # (B, C, size, size)
