"""MobileNetV3 small and large (Howard et al. 2019) in torchvision's module layout
(``features.N.block``, ``classifier.{0,3}``), so its state_dicts load as they are.

Blocks are the shared ``layers.InvertedResidual`` with hard-swish or ReLU and, where the
table says so, squeeze-excite (ReLU, hard-sigmoid gate, width hidden/4 rounded to 8). The
head: pool, 1x1-conv-like linear to 1024/1280 with hard-swish (the pre-logits), dropout
(`drop_rate`; the paper 0.2), classifier. Batch norm uses eps 1e-3 as torchvision (it
changes the logits), but PyTorch's default momentum 0.1, not torchvision's 0.01: with 0.01
the running statistics of a short run are still near their init and evaluation is at chance
(digits, 6 epochs of 20 steps: test accuracy 0.10; see tests/models/test_digits_training.py).

Small-input rule (see models.base): below 96 px the stem and the first stride-2 block run
at stride 1 (total stride 8: 32 px -> 4x4 map).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .base import FovealModel, is_small_input, make_head
from .layers import ConvNormAct, InvertedResidual, drop_path_rates, init_conv_linear, make_divisible
from .registry import register_model

# (kernel, expanded, out, SE, activation "RE"/"HS", stride) per block; input of each is the
# previous output (16 after the stem). Tables 1 and 2 of the paper.
LARGE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
         (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
         (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
         (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
         (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]
SMALL = [(3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
         (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
         (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
         (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1)]


class MobileNetV3(FovealModel):
    classifier_name = "classifier.3"

    def __init__(self, setting: list[tuple], last_channel: int, num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, width_mult: float = 1.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        norm = partial(nn.BatchNorm2d, eps=0.001)
        ch = lambda c: make_divisible(c * width_mult)  # noqa: E731
        cin = ch(16)
        features: list[nn.Module] = [ConvNormAct(in_chans, cin, 3, 1 if small else 2, norm_layer=norm,
                                                 act_layer=nn.Hardswish)]
        first_stride2 = next(i for i, row in enumerate(setting) if row[5] == 2)
        dpr = drop_path_rates(drop_path_rate, len(setting))
        for i, ((k, exp, cout, se, act, s), dp) in enumerate(zip(setting, dpr)):
            s = 1 if small and i == first_stride2 else s
            hidden, cout = ch(exp), ch(cout)
            features.append(InvertedResidual(
                cin, cout, hidden, k, s, nn.Hardswish if act == "HS" else nn.ReLU, norm,
                se_channels=make_divisible(hidden // 4) if se else 0, se_gate=nn.Hardsigmoid, drop_path=dp))
            cin = cout
        features.append(ConvNormAct(cin, 6 * cin, 1, norm_layer=norm, act_layer=nn.Hardswish))
        self.features = nn.Sequential(*features)
        self.cam_layer = f"features.{len(features) - 1}"  # (B, 6 * C, h, w)
        self.num_features = make_divisible(last_channel * width_mult)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, self.num_features), nn.Hardswish(inplace=True),
                                        nn.Dropout(drop_rate), make_head(self.num_features, num_classes))
        init_conv_linear(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 6 * C, H/32, W/32); (B, 6 * C, H/8, W/8) if small

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:2](x.mean((2, 3)))  # (B, num_features)
        return x if pre_logits else self.classifier[2:](x)


@register_model(family="mobilenetv3", default_img_size=224, min_img_size=16)
def mobilenetv3_large(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """MobileNetV3-Large 1.0: 5.48M parameters at 1000 classes."""
    return MobileNetV3(LARGE, 1280, num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kw)


@register_model(family="mobilenetv3", default_img_size=224, min_img_size=16)
def mobilenetv3_small(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """MobileNetV3-Small 1.0: 2.54M parameters at 1000 classes."""
    return MobileNetV3(SMALL, 1024, num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kw)
