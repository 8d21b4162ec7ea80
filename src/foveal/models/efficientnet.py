"""EfficientNet-B0..B3 (Tan & Le 2019) in torchvision's module layout (``features.N.M.block``,
``classifier.1``), so its state_dicts load as they are.

Stages of MBConv blocks (the shared ``layers.InvertedResidual``: SiLU, squeeze-excite of
width cin/4 with a sigmoid gate), widths scaled by `width_mult` (rounded to 8) and depths
by `depth_mult` (rounded up); B0..B3 use (1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4) at
224/240/260/300 px. Dropout before the classifier is `drop_rate` (paper: 0.2-0.3), stochastic
depth `drop_path_rate` (paper: 0.2).

Small-input rule (see models.base): below 96 px the stem and the first stride-2 stage
(24 channels) run at stride 1 (total stride 8: 32 px -> 4x4 map).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import FovealModel, is_small_input, make_head
from .layers import ConvNormAct, InvertedResidual, drop_path_rates, init_conv_linear, make_divisible
from .registry import register_model

# (expansion, kernel, stride, in, out, repeats) per stage, Table 1 of the paper (B0).
STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


class EfficientNet(FovealModel):
    classifier_name = "classifier.1"

    def __init__(self, width_mult: float, depth_mult: float, num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        ch = lambda c: make_divisible(c * width_mult)  # noqa: E731
        repeats = [int(math.ceil(n * depth_mult)) for *_, n in STAGES]
        dpr = iter(drop_path_rates(drop_path_rate, sum(repeats)))
        features: list[nn.Module] = [ConvNormAct(in_chans, ch(32), 3, 1 if small else 2, act_layer=nn.SiLU)]
        for i, ((t, k, s, cin, cout, _), n) in enumerate(zip(STAGES, repeats)):
            cin, cout, s = ch(cin), ch(cout), 1 if small and i == 1 else s
            blocks = []
            for j in range(n):
                c = cin if j == 0 else cout
                blocks.append(InvertedResidual(c, cout, make_divisible(c * t), k, s if j == 0 else 1, nn.SiLU,
                                               se_channels=max(1, c // 4), se_act=nn.SiLU, drop_path=next(dpr)))
            features.append(nn.Sequential(*blocks))
        self.num_features = 4 * ch(320)
        features.append(ConvNormAct(ch(320), self.num_features, 1, act_layer=nn.SiLU))
        self.features = nn.Sequential(*features)
        self.cam_layer = f"features.{len(features) - 1}"  # (B, num_features, h, w)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), make_head(self.num_features, num_classes))
        init_conv_linear(self, linear_std=None)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H/32, W/32); (B, C, H/8, W/8) if small

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # (B, num_features)
        return x if pre_logits else self.classifier(x)


def _efficientnet(width_mult: float, depth_mult: float, num_classes=1000, in_chans=3, img_size=224,
                  drop_rate=0.0, drop_path_rate=0.0, **kw) -> EfficientNet:
    return EfficientNet(width_mult, depth_mult, num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kw)


@register_model(family="efficientnet", default_img_size=224, min_img_size=16)
def efficientnet_b0(**kw):
    """EfficientNet-B0: 5.29M parameters at 1000 classes."""
    return _efficientnet(1.0, 1.0, **kw)


@register_model(family="efficientnet", default_img_size=240, min_img_size=16)
def efficientnet_b1(**kw):
    """EfficientNet-B1: 7.79M parameters at 1000 classes."""
    return _efficientnet(1.0, 1.1, **kw)


@register_model(family="efficientnet", default_img_size=260, min_img_size=16)
def efficientnet_b2(**kw):
    """EfficientNet-B2: 9.11M parameters at 1000 classes."""
    return _efficientnet(1.1, 1.2, **kw)


@register_model(family="efficientnet", default_img_size=300, min_img_size=16)
def efficientnet_b3(**kw):
    """EfficientNet-B3: 12.23M parameters at 1000 classes."""
    return _efficientnet(1.2, 1.4, **kw)
