"""Pre-activation ResNets (He et al. 2016, "Identity Mappings") and Wide ResNets
(Zagoruyko & Komodakis 2016), which are pre-activation ResNets with wider 3x3 blocks.

Block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ BN-ReLU-conv1x1 for bottlenecks); the shortcut
is the identity, or a 1x1 conv on the pre-activated input where the shape changes
(option B). One BN-ReLU after the last stage, since the blocks end on a bare conv.

Variants: preact_resnet18/34/50 (ImageNet widths 64..512) and the CIFAR Wide ResNets
wrn16_4 / wrn28_10 (depth 6n+4: 3 stages of n blocks, widths 16k/32k/64k, 16-channel stem;
`block_drop_rate` is the dropout between the two convs, 0.3 in the paper's best runs).

Small-input rule (see models.base): below 96 px the stem is a 3x3 stride-1 conv with no
max-pool (total stride 8 for 4 stages, 4 for the 3-stage WRNs: 32 px -> 8x8); from 96 px
on, a 7x7/2 conv and 3x3/2 max-pool.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FovealModel, is_small_input, make_head
from .layers import DropPath, drop_path_rates
from .registry import register_model


class _PreActBlock(nn.Module):
    """What both block types share: the shortcut rule, stochastic depth and the pre-activation."""

    def _add_shortcut(self, cin: int, cout: int, stride: int, drop_path: float) -> None:
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(BN-ReLU of x, the shortcut branch: x, or the 1x1 conv of the pre-activated x)."""
        pre = self.relu(self.bn1(x))
        return pre, x if self.shortcut is None else self.shortcut(pre)


class PreActBasicBlock(_PreActBlock):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, drop_path: float = 0.0, block_drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(block_drop_rate)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self._add_shortcut(cin, planes, stride, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre, shortcut = self._pre(x)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return self.drop_path(out) + shortcut


class PreActBottleneck(_PreActBlock):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, drop_path: float = 0.0, block_drop_rate: float = 0.0):
        super().__init__()
        cout = planes * 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(block_drop_rate)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self._add_shortcut(cin, cout, stride, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre, shortcut = self._pre(x)
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        out = self.conv3(self.dropout(self.relu(self.bn3(out))))
        return self.drop_path(out) + shortcut


class PreActResNet(FovealModel):
    """Stem, stages (`layers[i]` blocks of `widths[i]` planes, stride 2 after the first),
    final BN-ReLU, global average pool, `fc`."""

    classifier_name = "fc"
    cam_layer = "final_act"  # (B, C, h, w) after the last BN-ReLU

    def __init__(self, block: type, layers: list[int], widths: list[int], stem_width: int,
                 num_classes: int = 1000, in_chans: int = 3, img_size: int = 224, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, block_drop_rate: float = 0.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        if is_small_input(img_size):
            self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        dpr, cin, stages = drop_path_rates(drop_path_rate, sum(layers)), stem_width, []
        for i, (n, planes) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(cin, planes, stride, dpr[sum(layers[:i]) + j], block_drop_rate))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(cin)
        self.final_act = nn.ReLU()  # not in place, so hooks on it see their own output
        self.num_features = cin
        self.fc = make_head(cin, num_classes)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, C, H/32, W/32); (B, C, H/8, W/8) if small
        return self.final_act(self.norm(x))


def _preact(block: type, layers: list[int], width: int = 64, **kw) -> PreActResNet:
    return PreActResNet(block, layers, [width * 2**i for i in range(len(layers))], width, **kw)


@register_model(family="preact_resnet", default_img_size=224, min_img_size=16)
def preact_resnet18(**kw):
    """Pre-activation ResNet-18: 11.69M parameters at 1000 classes. `width` sets the stem and
    first stage (64; stages double it)."""
    return _preact(PreActBasicBlock, [2, 2, 2, 2], **kw)


@register_model(family="preact_resnet", default_img_size=224, min_img_size=16)
def preact_resnet34(**kw):
    return _preact(PreActBasicBlock, [3, 4, 6, 3], **kw)


@register_model(family="preact_resnet", default_img_size=224, min_img_size=16)
def preact_resnet50(**kw):
    """Pre-activation ResNet-50 (stride on the 3x3): 25.55M parameters at 1000 classes."""
    return _preact(PreActBottleneck, [3, 4, 6, 3], **kw)


def _wrn(depth: int, k: int, **kw) -> PreActResNet:
    n = (depth - 4) // 6  # depth 6n+4: 3 stages of n two-conv blocks, stem conv and fc
    return PreActResNet(PreActBasicBlock, [n, n, n], [16 * k, 32 * k, 64 * k], 16, **kw)


@register_model(family="preact_resnet", default_img_size=32, min_img_size=8)
def wrn16_4(**kw):
    """Wide ResNet-16-4 (CIFAR): 2.75M parameters at 10 classes."""
    return _wrn(16, 4, **kw)


@register_model(family="preact_resnet", default_img_size=32, min_img_size=8)
def wrn28_10(**kw):
    """Wide ResNet-28-10 (CIFAR): 36.49M parameters at 10 classes."""
    return _wrn(28, 10, **kw)
