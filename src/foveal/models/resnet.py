"""ResNet (He et al. 2016), in torchvision's module layout so its state_dicts load as they are.

Variants: ResNet-18/34/50/101/152, Wide ResNet-50-2/101-2 (torchvision's: the bottleneck's
inner width doubled) and the CIFAR ResNets 20/56/110 (3 stages of 16/32/64 channels,
option-A shortcuts: parameter-free stride-2 subsampling plus zero channels, as the paper's
CIFAR experiments, so resnet20 has 0.27M parameters).

Small-input rule (see models.base): below 96 px the stem is a 3x3 stride-1 conv with no
max-pool (the CIFAR form), so a 32-px image reaches the last stage at 4x4 instead of 1x1
(total stride 8). At 96 px and above every variant, CIFAR ones included, uses the 7x7/2 conv
and 3x3/2 max-pool stem.
"""

from __future__ import annotations

from typing import Type

import torch
from torch import nn
from torch.nn import functional as F

from .base import FovealModel, is_small_input, make_head

from .layers import DropPath, drop_path_rates
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
                 drop_path: float = 0.0, base_width: int = 64):
        super().__init__()
        width = planes * base_width // 64  # inner width: 2x planes for Wide ResNet-50-2
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)  # stride on the 3x3 (torchvision's "ResNet v1.5")
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
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


class ShortcutA(nn.Module):
    """Option-A shortcut: keep every `stride`-th pixel and append zero channels up to `cout`."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, cin, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, cout, H/s, W/s)


class ResNet(FovealModel):
    """Stem, then one stage per entry of `layers` (stage i: `width * 2**i` planes, stride 2
    from the second stage on), global average pool, `fc`.

    `shortcut`: "B" (1x1 conv + BN where the shape changes, torchvision) or "A" (ShortcutA).
    """

    classifier_name = "fc"

    def __init__(self, block: Type[nn.Module], layers: list[int], num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0, width: int = 64,
                 base_width: int = 64, shortcut: str = "B", zero_init_residual: bool = True):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        if shortcut not in ("A", "B"):
            raise ValueError(f"ResNet shortcut must be 'A' or 'B', got {shortcut!r}")
        if is_small_input(img_size):
            self.conv1 = conv3x3(in_chans, width)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        dpr = drop_path_rates(drop_path_rate, sum(layers))  # stochastic depth grows with depth
        self.inplanes, self.base_width, self.shortcut, i = width, base_width, shortcut, 0
        for stage, n in enumerate(layers):
            stride = 1 if stage == 0 else 2
            setattr(self, f"layer{stage + 1}", self._stage(block, width * 2**stage, n, stride, dpr[i:i + n]))
            i += n
        self.num_stages = len(layers)
        self.cam_layer = f"layer{len(layers)}"  # the last stage's output map
        self.num_features = self.inplanes
        self.fc = make_head(self.num_features, num_classes)
        self._init(zero_init_residual)

    def _stage(self, block, planes: int, n: int, stride: int, dpr: list[float]) -> nn.Sequential:
        down, cout = None, planes * block.expansion
        if stride != 1 or self.inplanes != cout:
            down = (ShortcutA(self.inplanes, cout, stride) if self.shortcut == "A" else
                    nn.Sequential(nn.Conv2d(self.inplanes, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        kw = {"base_width": self.base_width} if block is Bottleneck else {}
        blocks = [block(self.inplanes, planes, stride, down, dpr[0], **kw)]
        self.inplanes = cout
        blocks += [block(cout, planes, 1, None, d, **kw) for d in dpr[1:]]
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
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, width, H/4, W/4); full size if small
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x  # 4 stages: (B, C, H/32, W/32), (B, C, H/8, W/8) if small; 3 stages: 2x larger


def _resnet(block, layers, **kw) -> ResNet:
    return ResNet(block, layers, **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet18(**kw):
    """ResNet-18: 11.69M parameters at 1000 classes."""
    return _resnet(BasicBlock, [2, 2, 2, 2], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet34(**kw):
    """ResNet-34: 21.80M parameters at 1000 classes."""
    return _resnet(BasicBlock, [3, 4, 6, 3], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet50(**kw):
    """ResNet-50 (v1.5, stride on the 3x3): 25.56M parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 6, 3], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet101(**kw):
    """ResNet-101: 44.55M parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 4, 23, 3], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def resnet152(**kw):
    """ResNet-152: 60.19M parameters at 1000 classes."""
    return _resnet(Bottleneck, [3, 8, 36, 3], **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def wide_resnet50_2(**kw):
    """Wide ResNet-50-2 (torchvision's): bottleneck inner width doubled, 68.88M parameters."""
    return _resnet(Bottleneck, [3, 4, 6, 3], base_width=128, **kw)


@register_model(family="resnet", default_img_size=224, min_img_size=16)
def wide_resnet101_2(**kw):
    """Wide ResNet-101-2 (torchvision's): 126.89M parameters."""
    return _resnet(Bottleneck, [3, 4, 23, 3], base_width=128, **kw)


def _cifar_resnet(depth: int, **kw) -> ResNet:
    n = (depth - 2) // 6  # 6n+2 layers: 3 stages of n basic blocks
    kw.setdefault("width", 16)
    return _resnet(BasicBlock, [n, n, n], shortcut="A", **kw)


@register_model(family="resnet", default_img_size=32, min_img_size=8)
def resnet20(**kw):
    """CIFAR ResNet-20 (3 stages of 16/32/64, option-A shortcuts): 0.27M parameters at 10 classes."""
    return _cifar_resnet(20, **kw)


@register_model(family="resnet", default_img_size=32, min_img_size=8)
def resnet56(**kw):
    """CIFAR ResNet-56: 0.85M parameters at 10 classes."""
    return _cifar_resnet(56, **kw)


@register_model(family="resnet", default_img_size=32, min_img_size=8)
def resnet110(**kw):
    """CIFAR ResNet-110: 1.73M parameters at 10 classes."""
    return _cifar_resnet(110, **kw)
