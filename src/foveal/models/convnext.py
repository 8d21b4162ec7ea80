"""ConvNeXt (Liu et al. 2022) in torchvision's module layout (``features.N``, ``classifier.{0,2}``),
so its state_dicts load as they are.

Block: 7x7 depthwise conv, LayerNorm (channels last), Linear 4x, GELU, Linear back, scaled
by a learned per-channel `layer_scale` (init 1e-6), plus the residual under stochastic depth
(`drop_path_rate`; 0.1 for ConvNeXt-T in the paper). Stages are joined by LayerNorm + 2x2/2
convs; the head is pool, LayerNorm, dropout (`drop_rate`), linear.

Small-input rule (see models.base): below 96 px the 4x4/4 patchify stem becomes a 3x3/1
conv (total stride 8: 32 px -> 4x4 map).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FovealModel, is_small_input, make_head
from .layers import DropPath, LayerNorm2d, drop_path_rates
from .registry import register_model


class Permute(nn.Module):
    """x.permute(*dims), as a module so the block stays one Sequential (torchvision's keys)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute(0, 2, 3, 1),  # (B, H, W, C)
            nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
            Permute(0, 3, 1, 2),  # (B, C, H, W)
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale * self.block(x))


class ConvNeXt(FovealModel):
    classifier_name = "classifier.2"

    def __init__(self, depths: list[int], dims: list[int], num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 layer_scale: float = 1e-6):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        stem = nn.Conv2d(in_chans, dims[0], 3, 1, 1) if small else nn.Conv2d(in_chans, dims[0], 4, 4)
        layers: list[nn.Module] = [nn.Sequential(stem, LayerNorm2d(dims[0], eps=1e-6))]
        dpr = iter(drop_path_rates(drop_path_rate, sum(depths)))
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i > 0:  # downsampling between stages
                layers.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)))
            layers.append(nn.Sequential(*[CNBlock(dim, layer_scale, next(dpr)) for _ in range(depth)]))
        self.features = nn.Sequential(*layers)
        self.cam_layer = f"features.{len(layers) - 1}"  # the last stage, (B, C, h, w)
        self.num_features = dims[-1]
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        make_head(dims[-1], num_classes))
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # trunc_normal_ with its +-2 bounds never truncates at this std; normal_ is ~10x faster
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H/32, W/32); (B, C, H/8, W/8) if small

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier[:2](x.mean((2, 3), keepdim=True))  # (B, C) after the final LayerNorm
        if pre_logits:
            return x
        return self.classifier[2](nn.functional.dropout(x, self.drop_rate, self.training))


@register_model(family="convnext", default_img_size=224, min_img_size=16)
def convnext_tiny(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """ConvNeXt-T: 28.59M parameters at 1000 classes."""
    return ConvNeXt([3, 3, 9, 3], [96, 192, 384, 768], num_classes, in_chans, img_size, drop_rate,
                    drop_path_rate, **kw)
