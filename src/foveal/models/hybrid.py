"""A hybrid CNN-transformer in the manner of CoAtNet (Dai et al. 2021): convolutions where
the map is large, attention where it is small ("C-C-T-T").

Layout:
- ``stem``: two 3x3 ConvNormAct (GELU), the first at stride 2.
- ``stages.0``, ``stages.1``: MBConv blocks (shared ``layers.InvertedResidual``, expansion 4,
  squeeze-excite), the first block of each at stride 2. Convolutions bring the locality
  prior that lets the model train on small data sets.
- ``stages.2``, ``stages.3``: transformer stages on the token grid. Each starts with a 2x2/2
  conv + LayerNorm (patch merging, halving the grid), adds a conditional position encoding
  (a 3x3 depthwise conv on the grid, Chu et al. 2023: no fixed-size table, so any input size
  works), then runs pre-norm transformer blocks (shared ``layers.TransformerBlock``) on the
  (B, h*w, D) tokens.
- ``norm`` (LayerNorm) on the final tokens; the head averages them (no class token).

Total stride 32 (224 px -> 7x7 = 49 tokens in the last stage, 196 in the third).
Small-input rule (see models.base): below 96 px the stem and the first MBConv stage run at
stride 1 (total stride 8: 32 px -> 8x8 = 64 tokens in the third stage, 16 in the last).

``forward_features`` returns (B, N, D) tokens of the last stage (row-major over the h x w
grid, ``num_prefix_tokens`` = 0); ``cam_layer`` is the last transformer block, whose output
is the same (B, N, D) tokens before the final norm.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import FovealModel, is_small_input, make_head
from .layers import ConvNormAct, InvertedResidual, LayerNorm2d, TransformerBlock, drop_path_rates, init_conv_linear
from .registry import register_model

HEAD_DIM = 32  # channels per attention head


class TransformerStage(nn.Module):
    """(B, C, H, W) map -> patch merging -> + position conv -> blocks on (B, N, D) tokens -> (B, D, H/2, W/2)."""

    def __init__(self, cin: int, dim: int, depth: int, dpr: list[float]):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(cin, dim, 2, 2), LayerNorm2d(dim, eps=1e-6))
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, dim // HEAD_DIM, drop_path=d) for d in dpr])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)  # (B, D, h, w)
        x = x + self.pos(x)
        B, D, h, w = x.shape
        t = self.blocks(x.flatten(2).transpose(1, 2))  # (B, h*w, D)
        return t.transpose(1, 2).reshape(B, D, h, w)


def mbconv(cin: int, cout: int, stride: int, drop_path: float) -> InvertedResidual:
    """MBConv: expansion 4, 3x3 depthwise, GELU, squeeze-excite to cin/4 (at least 8)."""
    return InvertedResidual(cin, cout, 4 * cin, 3, stride, nn.GELU, se_channels=max(8, cin // 4), se_act=nn.GELU,
                            drop_path=drop_path)


class HybridNet(FovealModel):
    classifier_name = "head"
    num_prefix_tokens = 0

    def __init__(self, stem_width: int, dims: list[int], depths: list[int], num_classes: int = 1000,
                 in_chans: int = 3, img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        small = is_small_input(img_size)
        self.stem = nn.Sequential(ConvNormAct(in_chans, stem_width, 3, 1 if small else 2, act_layer=nn.GELU),
                                  ConvNormAct(stem_width, stem_width, 3, act_layer=nn.GELU))
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        stages, cin = [], stem_width
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            rates, dpr = dpr[:depth], dpr[depth:]
            if i < 2:
                stride = 1 if small and i == 0 else 2
                stages.append(nn.Sequential(*[mbconv(cin if j == 0 else dim, dim, stride if j == 0 else 1, d)
                                              for j, d in enumerate(rates)]))
            else:
                stages.append(TransformerStage(cin, dim, depth, rates))
            cin = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(cin, eps=1e-6)
        self.cam_layer = f"stages.3.blocks.{depths[3] - 1}"  # (B, N, D) tokens
        self.num_features = cin
        self.head = make_head(cin, num_classes)
        # linear: trunc_normal_ with its +-2 bounds never truncates at this std; normal_ is ~10x faster
        init_conv_linear(self, linear_std=0.02, zero_conv_bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, D, H/32, W/32); (B, D, H/8, W/8) if small
        return self.norm(x.flatten(2).transpose(1, 2))  # (B, N, D)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(1)  # (B, D)
        return x if pre_logits else self.head(F.dropout(x, self.drop_rate, self.training))


@register_model(family="hybrid", default_img_size=224, min_img_size=16)
def hybrid_tiny(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """C-C-T-T, widths 32/64/128/256, depths 2/2/3/2: 2.70M parameters at 1000 classes."""
    return HybridNet(32, [32, 64, 128, 256], [2, 2, 3, 2], num_classes, in_chans, img_size, drop_rate,
                     drop_path_rate, **kw)


@register_model(family="hybrid", default_img_size=224, min_img_size=16)
def hybrid_small(num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0, drop_path_rate=0.0, **kw):
    """C-C-T-T, widths 64/96/192/384, depths 2/3/5/2: 6.91M parameters at 1000 classes."""
    return HybridNet(64, [64, 96, 192, 384], [2, 3, 5, 2], num_classes, in_chans, img_size, drop_rate,
                     drop_path_rate, **kw)
