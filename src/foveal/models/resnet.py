"""ResNet (He et al. 2016), in torchvision's module layout so its state_dicts load as they are.

Small-input rule (see models.base): below 96 px the stem is a 3x3 stride-1 conv with no
max-pool (the CIFAR form), so a 32-px image reaches the last stage at 4x4 instead of 1x1.
"""

from __future__ import annotations

from typing import Type

import torch
from torch import nn

from .base import FovealModel, is_small_input, make_head
from .layers import DropPath
from .registry import register_model


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 drop_path: float = 0.0):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self.drop_path(out) + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 drop_path: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # stride on the 3x3 (torchvision's "ResNet v1.5")
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.drop_path(out) + shortcut)


class ResNet(FovealModel):
    cam_layer = "layer4"
    classifier_name = "fc"

    def __init__(self, block: Type[nn.Module], layers: list[int], num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, width: int = 64,
                 zero_init_residual: bool = True):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        if is_small_input(img_size):
            self.conv1 = conv3x3(in_chans, width)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        dpr = torch.linspace(0, drop_path_rate, sum(layers)).tolist()  # stochastic depth grows with depth
        self.inplanes, i = width, 0
        for stage, n in enumerate(layers):
            stride = 1 if stage == 0 else 2
            setattr(self, f"layer{stage + 1}", self._stage(block, width * 2**stage, n, stride, dpr[i:i + n]))
            i += n
        self.num_features = self.inplanes
        self.fc = make_head(self.num_features, num_classes)
        self._init(zero_init_residual)

    def _stage(self, block, planes: int, n: int, stride: int, dpr: list[float]) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, down, dpr[0])]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes, 1, None, d) for d in dpr[1:]]
        return nn.Sequential(*blocks)

    def _init(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each residual block starts as identity (Goyal et al. 2017)
            for m in self.modules():
                last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, (BasicBlock, Bottleneck)) and last_bn is not None:
                    nn.init.zeros_(last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x  # (B, C, H/32, W/32); (B, C, H/8, W/8) for small inputs


def _resnet(block, layers, **kw) -> ResNet:
    return ResNet(block, layers, **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet18(**kw):
    """ResNet-18: 11.69M parameters at 1000 classes."""
    return _resnet(BasicBlock, [2, 2, 2, 2], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet34(**kw):
    return _resnet(BasicBlock, [3, 4, 6, 3], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet50(**kw):
    """ResNet-50 (v1.5, stride on the 3x3): 25.56M parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 6, 3], **kw)
