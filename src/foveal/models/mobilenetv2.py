"""MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

Module layout as torchvision (``features.N``, ``classifier.1``) except inside the blocks,
which use the shared ``layers.InvertedResidual`` (``block`` with the projection as one
ConvNormAct); ``remap_state_dict`` renames torchvision's ``conv.N`` keys.

Small-input rule (see models.base): below 96 px the stem and the first stride-2 stage
(24 channels) run at stride 1 (total stride 8: 32 px -> 4x4 map), as the CIFAR form.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .base import FovealModel, is_small_input, make_head
from .layers import ConvNormAct, InvertedResidual, drop_path_rates, init_conv_linear, make_divisible
from .registry import register_model

# (expansion t, channels c, repeats n, stride s) per stage, Table 2 of the paper.
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(FovealModel):
    classifier_name = "classifier.1"

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, width_mult: float = 1.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        cin = make_divisible(32 * width_mult)
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvNormAct(in_chans, cin, 3, 1 if small else 2, act_layer=nn.ReLU6)]
        dpr = iter(drop_path_rates(drop_path_rate, sum(n for _, _, n, _ in SETTINGS)))
        for stage, (t, c, n, s) in enumerate(SETTINGS):
            cout = make_divisible(c * width_mult)
            s = 1 if small and stage == 1 else s
            for i in range(n):
                features.append(InvertedResidual(cin, cout, int(round(cin * t)), 3, s if i == 0 else 1,
                                                 nn.ReLU6, drop_path=next(dpr)))
                cin = cout
        features.append(ConvNormAct(cin, self.num_features, 1, act_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.cam_layer = f"features.{len(features) - 1}"  # (B, 1280, h, w)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), make_head(self.num_features, num_classes))
        init_conv_linear(self)  # its convs have no bias

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 1280, H/32, W/32); (B, 1280, H/8, W/8) if small

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # (B, 1280)
        return x if pre_logits else self.classifier(x)

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision keeps a block's projection as separate conv and BN (``conv.{n-1}``,
        ``conv.{n}``); ours is one ConvNormAct (``block.{n-1}.0``, ``block.{n-1}.1``)."""
        out = {}
        for key, v in sd.items():
            m = re.fullmatch(r"features\.(\d+)\.conv\.(\d+)\.(.+)", key)
            if m:
                i, j, rest = int(m[1]), int(m[2]), m[3]
                last = len(self.features[i].block) - 1  # index of our projection ConvNormAct
                key = f"features.{i}.block." + (f"{j}.{rest}" if j < last else f"{last}.{j - last}.{rest}")
            out[key] = v
        return out


@register_model(family="mobilenetv2", default_img_size=224, min_img_size=16)
def mobilenetv2(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """MobileNetV2 1.0: 3.50M parameters at 1000 classes. `width_mult` scales the channels."""
    return MobileNetV2(num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kw)
