"""Convolution blocks shared by several families.

Two conv-norm-act layouts exist because weight files fix the key names:
``ConvNormAct`` is an ``nn.Sequential`` (keys ``0.weight``, ``1.running_mean``), the layout
of torchvision's ``Conv2dNormActivation`` (MobileNet, EfficientNet, hybrid);
``BasicConv2d`` names its parts ``conv`` and ``bn`` (GoogLeNet, Inception-v3).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[..., nn.Module]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never more than 10% below `v`
    (the rule MobileNet and EfficientNet width multipliers use)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def make_act(act_layer: ActLayer) -> nn.Module:
    """An activation module, in place where the class allows it (GELU does not)."""
    try:
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> activation; `act_layer=None` leaves the activation out
    (linear projections of inverted residuals)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer | None = nn.ReLU):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2,
                                             groups=groups, bias=False), norm_layer(cout)]
        if act_layer is not None:
            layers.append(make_act(act_layer))
        super().__init__(*layers)
        self.out_channels = cout


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm (eps 1e-3, as the Inception papers) -> ReLU.

    `kw` goes to Conv2d (kernel_size, stride, padding), so asymmetric (1, 7) kernels work.
    """

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def conv_kind(m: nn.Module) -> str | None:
    """How a Conv2d module reads its weight and bias: 'plain' (nn.Conv2d's own forward), 'same' (timm's
    Conv2dSame: TF "same" padding, then that same conv), None for anything else (not a Conv2d, or a
    subclass that re-parametrizes its weight, such as weight standardization). Code that rewrites convs
    (CPU bf16 depthwise policy, batch-norm folding) touches only the first two."""
    if not isinstance(m, nn.Conv2d):
        return None
    if type(m).forward is nn.Conv2d.forward:
        return "plain"
    if type(m).__name__ == "Conv2dSame" and type(m).__module__.startswith("timm."):
        return "same"
    return None
