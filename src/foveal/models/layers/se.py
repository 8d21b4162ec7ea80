"""Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""

from __future__ import annotations

import torch
from torch import nn

from .conv import ActLayer, make_act


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(mean(x))))), with 1x1 convs `fc1`/`fc2` (torchvision's names).

    MobileNetV3 uses ReLU and a hard sigmoid gate; EfficientNet uses SiLU and a sigmoid.
    """

    def __init__(self, channels: int, rd_channels: int, act_layer: ActLayer = nn.ReLU,
                 gate_layer: ActLayer = nn.Sigmoid):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.act = make_act(act_layer)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))
