"""GoogLeNet / Inception-v1 (Szegedy et al. 2015) in torchvision's module layout.

As torchvision, convs carry batch norm (BasicConv2d) and the "5x5" branch uses a 3x3 conv
(a slip kept by torchvision for its weights), so its state_dicts load as they are; their
auxiliary heads are dropped when the model has none (see ``remap_state_dict``).

Auxiliary heads (after inception4a and 4d) are off by default; with ``aux_logits=True``
``forward_aux(x)`` returns (logits, [aux1, aux2]) for the paper's weighted auxiliary loss,
while ``forward`` always returns the logits alone. ``transform_input=True`` maps inputs
normalized with the ImageNet mean/std to the [-1, 1] range torchvision's ported weights
expect.

Small-input rule (see models.base): below 96 px the 7x7/2 first conv becomes 3x3/1 and the
first max-pool is left out (total stride 8: 32 px -> 4x4 map at inception5b).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import AuxLogitsModel, is_small_input, make_head
from .layers import BasicConv2d
from .registry import register_model


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; maxpool-1x1), concatenated on channels."""

    def __init__(self, cin: int, c1: int, c3red: int, c3: int, c5red: int, c5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3red, kernel_size=1),
                                     BasicConv2d(c3red, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5red, kernel_size=1),
                                     BasicConv2d(c5red, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], 1)  # (B, c1 + c3 + c5 + pool_proj, H, W)


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool to 4x4, 1x1 conv to 128, fc 1024, dropout 0.7, fc."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = make_head(1024, num_classes)
        self.dropout = nn.Dropout(0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, 4)).flatten(1)  # (B, 2048)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


# (cin, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj) per inception module, Table 1.
BLOCKS = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32), "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64), "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64), "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128), "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(AuxLogitsModel):
    classifier_name = "fc"
    cam_layer = "inception5b"  # (B, 1024, h, w)
    aux_prefixes = ("aux1.", "aux2.")

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224, drop_rate: float = 0.0,
                 aux_logits: bool = False, transform_input: bool = False):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        self.aux_logits, self.transform_input = aux_logits, transform_input and in_chans == 3
        if is_small_input(img_size):
            self.conv1, self.maxpool1 = BasicConv2d(in_chans, 64, kernel_size=3, padding=1), nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, cfg in BLOCKS.items():
            setattr(self, name, Inception(*cfg))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.num_features = 1024
        self.fc = make_head(1024, num_classes)
        self.init_normal(0.01)

    def _features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.maxpool1(self.conv1(x))  # (B, 64, H/4, W/4); full size if small
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (B, 192, H/8, W/8)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (B, 480, H/16, W/16)
        aux = []
        x = self.inception4a(x)
        if with_aux and self.aux1 is not None:
            aux.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        if with_aux and self.aux2 is not None:
            aux.append(self.aux2(x))
        x = self.maxpool4(self.inception4e(x))  # (B, 832, H/32, W/32)
        return self.inception5b(self.inception5a(x)), aux  # (B, 1024, H/32, W/32)

    def reset_classifier(self, num_classes: int) -> None:
        super().reset_classifier(num_classes)
        for aux in (self.aux1, self.aux2):
            if aux is not None:
                aux.fc2 = make_head(1024, num_classes).to(aux.fc1.weight.device)


@register_model(family="googlenet", default_img_size=224, min_img_size=16)
def googlenet(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """GoogLeNet: 6.62M parameters at 1000 classes without auxiliary heads (13.00M with)."""
    return GoogLeNet(num_classes, in_chans, img_size, drop_rate, **kw)
