"""Inception-v3 (Szegedy et al. 2016) in torchvision's module layout (``Conv2d_1a_3x3``,
``Mixed_5b``... ``fc``), so its state_dicts load as they are; their auxiliary head is
dropped when the model has none (see ``remap_state_dict``).

The auxiliary head (after Mixed_6e) is off by default; with ``aux_logits=True``
``forward_aux(x)`` returns (logits, [aux]) while ``forward`` returns the logits alone.
``transform_input=True`` maps ImageNet-normalized inputs to the [-1, 1] range of
torchvision's ported weights. Meant for 299 px (min 75 px in the ImageNet form).

Small-input rule (see models.base): below 96 px the stem convs are padded and stride 1 and
the first max-pool is left out (total stride 8: 32 px -> 3x3 map at Mixed_7c).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import AuxLogitsModel, is_small_input, make_head
from .layers import BasicConv2d
from .registry import register_model


def _cat(*xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, 1)


def _avgpool3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1)


class InceptionA(nn.Module):
    """35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return _cat(self.branch1x1(x), b5, b3, self.branch_pool(_avgpool3(x)))


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return _cat(self.branch3x3(x), b3, F.max_pool2d(x, 3, 2))


class InceptionC(nn.Module):
    """17x17 module with factorized 7x7 convs (1x7 then 7x1)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = conv(d)
        return _cat(self.branch1x1(x), b7, d, self.branch_pool(_avgpool3(x)))


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return _cat(b3, b7, F.max_pool2d(x, 3, 2))


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks (1x3 and 3x1 side by side)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = _cat(self.branch3x3_2a(b3), self.branch3x3_2b(b3))
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = _cat(self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d))
        return _cat(self.branch1x1(x), b3, d, self.branch_pool(_avgpool3(x)))


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 map: avgpool 5/3, 1x1 conv, 5x5 conv, fc."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = make_head(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 17x17 -> 5x5 as the paper; smaller maps (small inputs) are pooled to 5x5 adaptively.
        x = F.avg_pool2d(x, 5, 3) if x.shape[-1] >= 17 else F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))  # (B, 768, 1, 1)
        return self.fc(x.flatten(1))


class Inception3(AuxLogitsModel):
    classifier_name = "fc"
    cam_layer = "Mixed_7c"  # (B, 2048, h, w)
    aux_prefixes = ("AuxLogits.",)

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 299, drop_rate: float = 0.0,
                 aux_logits: bool = False, transform_input: bool = False):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        self.aux_logits, self.transform_input = aux_logits, transform_input and in_chans == 3
        small = is_small_input(img_size)
        pad = 1 if small else 0  # small inputs: 'same' stem convs at stride 1
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, kernel_size=3, stride=1 if small else 2, padding=pad)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3, padding=pad)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.Identity() if small else nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3, padding=pad)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = InceptionD(768), InceptionE(1280), InceptionE(2048)
        self.num_features = 2048
        self.fc = make_head(2048, num_classes)
        self.init_normal(0.1)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147) at 299 px
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))  # (B, 192, 71, 71)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(x))))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        aux = [self.AuxLogits(x)] if with_aux and self.AuxLogits is not None else []
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        return x, aux

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        if self.AuxLogits is not None:
            self.AuxLogits.fc = make_head(768, num_classes).to(self.AuxLogits.conv0.conv.weight.device)


@register_model(family="inception", default_img_size=299, min_img_size=16)
def inception_v3(num_classes=1000, in_chans=3, img_size=299, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """Inception-v3: 23.83M parameters at 1000 classes without the auxiliary head (27.16M with)."""
    return Inception3(num_classes, in_chans, img_size, drop_rate, **kw)
