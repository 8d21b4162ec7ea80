"""Inverted residual / MBConv block (MobileNetV2, MobileNetV3, EfficientNet, hybrid stages).

Layout (torchvision's MobileNetV3 and EfficientNet): ``block`` is a Sequential of
[1x1 expand ConvNormAct (left out when no expansion), kxk depthwise ConvNormAct,
optional SqueezeExcite, 1x1 linear projection ConvNormAct]; the shortcut is added when
stride is 1 and the channel count is kept.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import ActLayer, ConvNormAct, NormLayer
from .drop import DropPath
from .se import SqueezeExcite


class InvertedResidual(nn.Module):
    """cin -> hidden (expand) -> depthwise kxk (stride) -> [SE] -> cout.

    `se_channels` = 0 leaves SE out; its width is the caller's rule (MobileNetV3: hidden/4
    rounded to 8; EfficientNet: cin/4).
    """

    def __init__(self, cin: int, cout: int, hidden: int, kernel_size: int = 3, stride: int = 1,
                 act_layer: ActLayer = nn.ReLU, norm_layer: NormLayer = nn.BatchNorm2d, se_channels: int = 0,
                 se_act: ActLayer = nn.ReLU, se_gate: ActLayer = nn.Sigmoid, drop_path: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvNormAct(cin, hidden, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden,
                                  norm_layer=norm_layer, act_layer=act_layer))
        if se_channels:
            layers.append(SqueezeExcite(hidden, se_channels, se_act, se_gate))
        layers.append(ConvNormAct(hidden, cout, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.drop_path(out) if self.use_residual else out
