"""The weight initialization the convolutional families share (torchvision's rules)."""

from __future__ import annotations

import math
from typing import Optional

from torch import nn


def init_conv_linear(model: nn.Module, linear_std: Optional[float] = 0.01, zero_conv_bias: bool = True) -> None:
    """Kaiming-normal (fan_out, ReLU gain) convolutions and zero linear biases, as torchvision's
    MobileNet, EfficientNet and VGG initialize.

    `linear_std`: linear weights ~ N(0, std^2); None: U(-1/sqrt(out), 1/sqrt(out)), EfficientNet's
    rule. `zero_conv_bias`: convolution biases start at zero; False keeps PyTorch's default draw
    (the hybrid family's downsampling and positional convs).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")  # the default leaky_relu with a = 0 is ReLU's gain
            if zero_conv_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is None:
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
            else:
                nn.init.normal_(m.weight, 0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
