"""VGG-11/13/16/19 (Simonyan & Zisserman 2015), with and without batch norm, in torchvision's
module layout (``features.N``, ``classifier.{0,3,6}``) so its state_dicts load as they are.

Head: average-pool the map to 7x7, two 4096-wide ReLU layers with dropout (`drop_rate`;
torchvision trains with 0.5), then the classifier. ``forward_head(pre_logits=True)`` gives
the second 4096-wide layer's output.

Small-input rule (see models.base): below 96 px the fifth max-pool is left out (total
stride 16: 32 px -> 2x2 map) and the head pools to 1x1 with 512-wide hidden layers, the
usual CIFAR form (15M parameters for VGG-16 instead of 138M).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FovealModel, is_small_input
from .layers import init_conv_linear
from .registry import register_model

# Conv widths per stage; "M" is a 2x2 max-pool.
CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(cfg: list[int | str], in_chans: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(in_chans, int(v), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        in_chans = int(v)
    return nn.Sequential(*layers)


class VGG(FovealModel):
    classifier_name = "classifier.6"

    def __init__(self, cfg: list[int | str], batch_norm: bool = False, num_classes: int = 1000,
                 in_chans: int = 3, img_size: int = 224, drop_rate: float = 0.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        self.features = make_features(cfg[:-1] if small else cfg, in_chans, batch_norm)
        # Grad-CAM hooks the last ReLU: the final map before pooling, (B, 512, h, w).
        self.cam_layer = f"features.{max(i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU))}"
        pool, hidden = (1, 512) if small else (7, 4096)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(512 * pool * pool, hidden), nn.ReLU(True), nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity(),
        )
        self.num_features = hidden
        init_conv_linear(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 512, H/32, W/32); (B, 512, H/16, W/16) if small

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:6](self.avgpool(x).flatten(1))  # (B, hidden)
        return x if pre_logits else self.classifier[6](x)


def _vgg(name: str, batch_norm: bool, num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0,
         drop_path_rate=0.0, **kw) -> VGG:
    return VGG(CFGS[name], batch_norm, num_classes, in_chans, img_size, drop_rate, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg11(**kw):
    """VGG-11 (configuration A): 132.86M parameters at 1000 classes."""
    return _vgg("vgg11", False, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg11_bn(**kw):
    return _vgg("vgg11", True, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg13(**kw):
    return _vgg("vgg13", False, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg13_bn(**kw):
    return _vgg("vgg13", True, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg16(**kw):
    """VGG-16 (configuration D): 138.36M parameters at 1000 classes."""
    return _vgg("vgg16", False, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg16_bn(**kw):
    return _vgg("vgg16", True, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg19(**kw):
    """VGG-19 (configuration E): 143.67M parameters at 1000 classes."""
    return _vgg("vgg19", False, **kw)


@register_model(family="vgg", default_img_size=224, min_img_size=16)
def vgg19_bn(**kw):
    return _vgg("vgg19", True, **kw)
