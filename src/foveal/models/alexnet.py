"""AlexNet (Krizhevsky et al. 2012), the one-GPU form of torchvision (64-192-384-256-256
channels), in its module layout (``features.{0,3,6,8,10}``, ``classifier.{1,4,6}``).

Head: average-pool to 6x6, dropout (`drop_rate`; torchvision trains with 0.5) before each
of two 4096-wide ReLU layers, then the classifier.

Small-input rule (see models.base): below 96 px the 11x11/4 first conv becomes 3x3/1 (the
three 3x3/2 max-pools remain: 32 px -> 3x3 map) and the head pools to 1x1 with 512-wide
hidden layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FovealModel, is_small_input
from .registry import register_model


class AlexNet(FovealModel):
    classifier_name = "classifier.6"
    cam_layer = "features.11"  # ReLU after the last conv, (B, 256, h, w)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224, drop_rate: float = 0.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        stem = nn.Conv2d(in_chans, 64, 3, 1, 1) if small else nn.Conv2d(in_chans, 64, 11, 4, 2)
        self.features = nn.Sequential(
            stem, nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        pool, hidden = (1, 512) if small else (6, 4096)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(256 * pool * pool, hidden), nn.ReLU(inplace=True),
            nn.Dropout(drop_rate), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity(),
        )
        self.num_features = hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 256, 6, 6) at 224 px; (B, 256, 3, 3) at 32 px if small

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:6](self.avgpool(x).flatten(1))  # (B, hidden)
        return x if pre_logits else self.classifier[6](x)


@register_model(family="alexnet", default_img_size=224, min_img_size=16)
def alexnet(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """AlexNet: 61.10M parameters at 1000 classes."""
    return AlexNet(num_classes, in_chans, img_size, drop_rate, **kw)
