"""Stochastic depth (Huang et al. 2016): drop whole residual branches per sample."""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each sample's branch with probability `p`, rescaling the kept ones by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, n: int) -> list[float]:
    """Per-block stochastic-depth rates growing linearly from 0 to `rate` over `n` blocks.

    Plain Python (no tensor), so models also build on the meta device.
    """
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
