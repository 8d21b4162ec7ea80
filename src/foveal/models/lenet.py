"""LeNet-5 (LeCun et al. 1998), the classic 32x32 layout and a modern variant.

Classic: conv5(6) - tanh - avgpool2 - conv5(16) - tanh - avgpool2 - fc120 - fc84 - fc.
Small-input rule: below 32 px the first conv is padded by 2 (the common MNIST 28-px form);
above, the last map is average-pooled to 5x5 so the classifier keeps its published size.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FovealModel
from .layers.pool import AdaptiveAvgPool
from .registry import register_model


class LeNet5(FovealModel):
    cam_layer = "features.5"  # output of the second conv block (its activation), (B, 16, h, w)
    classifier_name = "head"

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 32,
                 drop_rate: float = 0.0, modern: bool = False):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        act = nn.ReLU if modern else nn.Tanh
        pool = nn.MaxPool2d if modern else nn.AvgPool2d
        norm = (lambda c: nn.BatchNorm2d(c)) if modern else (lambda c: nn.Identity())
        pad = 2 if img_size < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=pad, bias=not modern), norm(6), act(), pool(2),  # BN has the bias
            nn.Conv2d(6, 16, 5), act(), pool(2),
        )
        # Map side after the features: ((s + 2p - 4) // 2 - 4) // 2; pooled to 5x5 when larger.
        side = ((img_size + 2 * pad - 4) // 2 - 4) // 2
        self.pool = AdaptiveAvgPool(5) if side != 5 else nn.Identity()
        self.num_features = 84
        self.pre_logits = nn.Sequential(nn.Flatten(), nn.Linear(16 * 25, 120), act(), nn.Linear(120, 84), act())
        self.head = nn.Linear(84, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 16, h, w)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.pool(x))  # (B, 84)
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)


@register_model(family="lenet", default_img_size=32, min_img_size=20)
def lenet5(num_classes=10, in_chans=1, img_size=32, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """The classic LeNet-5 (tanh, average pooling): 61,706 parameters at 32 px, 10 classes."""
    return LeNet5(num_classes, in_chans, img_size, drop_rate, modern=False, **kw)


@register_model(family="lenet", default_img_size=32, min_img_size=20)
def lenet5_modern(num_classes=10, in_chans=1, img_size=32, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """LeNet-5 with ReLU, max pooling and batch norm: trains faster with modern optimizers."""
    return LeNet5(num_classes, in_chans, img_size, drop_rate, modern=True, **kw)
