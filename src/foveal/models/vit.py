"""Vision Transformer (Dosovitskiy et al. 2021) in timm's key layout (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``, ``head``), so timm weights load as they are; ``remap_state_dict`` translates
torchvision's layout (``conv_proj``, ``encoder.layers.encoder_layer_N``...) and resizes
position embeddings to this model's grid.

Patch-size rule (the small-input rule of this family): unless `patch_size` is given, 16 px
patches from 160 px up, 8 px from 96 px, 4 px below (32 px -> 8x8 grid of 64 tokens, so
small images still give a useful sequence). Inputs of another size than `img_size` work:
the position embeddings are interpolated on the fly.

``forward_features`` returns (B, 1 + N, D) tokens after the final LayerNorm (class token
first; ``num_prefix_tokens`` = 1); the head reads the class token (``global_pool="token"``)
or the mean of the patch tokens (``"avg"``). ``cam_layer`` is the last block.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F

from .base import FovealModel, make_head
from .layers import TransformerBlock, drop_path_rates
from .registry import register_model


def vit_patch_size(img_size: int) -> int:
    """The patch side for an input side: 16 from 160 px, 8 from 96 px, else 4."""
    return 16 if img_size >= 160 else 8 if img_size >= 96 else 4


def resample_pos_embed(pos: torch.Tensor, grid: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
    """(1, P + g*g, D) position embeddings -> (1, P + gh*gw, D), bicubic over the square grid."""
    prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
    old = int(math.sqrt(patches.shape[1]))
    if (old, old) == tuple(grid):
        return pos
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([prefix, patches.flatten(2).transpose(1, 2)], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> D-dim embeddings, by one strided conv."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, D, H/p, W/p)


# torchvision key pattern -> timm key, applied in order by ``remap_state_dict``.
_TORCHVISION_KEYS = [
    (r"^conv_proj\.", "patch_embed.proj."), (r"^class_token$", "cls_token"),
    (r"^encoder\.pos_embedding$", "pos_embed"), (r"^encoder\.ln\.", "norm."), (r"^heads\.head\.", "head."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"blocks.\1."), (r"\.ln_1\.", ".norm1."), (r"\.ln_2\.", ".norm2."),
    (r"\.self_attention\.in_proj_(weight|bias)$", r".attn.qkv.\1"), (r"\.self_attention\.out_proj\.", ".attn.proj."),
    (r"\.mlp\.(0|linear_1)\.", ".mlp.fc1."), (r"\.mlp\.(3|linear_2)\.", ".mlp.fc2."),
]


class VisionTransformer(FovealModel):
    classifier_name = "head"
    num_prefix_tokens = 1

    def __init__(self, embed_dim: int, depth: int, num_heads: int, num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 patch_size: int | None = None, mlp_ratio: float = 4.0, attn_drop_rate: float = 0.0,
                 global_pool: str = "token"):
        super().__init__(num_classes, in_chans, img_size, drop_rate)
        if global_pool not in ("token", "avg"):
            raise ValueError(f"ViT global_pool must be 'token' or 'avg', got {global_pool!r}")
        self.patch_size = patch_size or vit_patch_size(img_size)
        self.grid = (img_size // self.patch_size,) * 2
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(in_chans, embed_dim, self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        self.blocks = nn.Sequential(*[TransformerBlock(embed_dim, num_heads, mlp_ratio, attn_drop=attn_drop_rate,
                                                       drop_path=d) for d in drop_path_rates(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.cam_layer = f"blocks.{depth - 1}"  # (B, 1 + N, D) tokens
        self.num_features = embed_dim
        self.head = make_head(embed_dim, num_classes)
        self._init()

    def _init(self) -> None:
        # trunc_normal_ with its +-2 bounds never truncates at this std; normal_ is ~10x faster
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, D, gh, gw)
        grid = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        pos = resample_pos_embed(self.pos_embed, grid) if grid != self.grid else self.pos_embed
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos  # (B, 1 + N, D)
        return self.norm(self.blocks(x))

    def layer_ids(self) -> dict[str, int]:
        """Embeddings (patch, class token, positions) at depth 0, block i at i + 1, then the final
        norm, then the head: the grouping of layer-wise lr decay in BEiT / MAE fine-tuning."""
        depth = len(self.blocks)
        ids = {}
        for name, _ in self.named_parameters():
            root = name.split(".")[0]
            ids[name] = (int(name.split(".")[1]) + 1 if root == "blocks" else depth + 1 if root == "norm"
                         else depth + 2 if root == self.classifier_name else 0)
        return ids

    def forward_masked(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches `keep` (B, K) indexes on the row-major grid: (B, 1 + K, D) tokens.

        The hook of masked-image pretraining (MAE, He et al. 2022): position embeddings are added
        before the visible patches are gathered, so each token keeps its place in the image.
        """
        x = self.patch_embed(x)  # (B, D, gh, gw)
        grid = tuple(x.shape[-2:])
        pos = resample_pos_embed(self.pos_embed, grid) if grid != self.grid else self.pos_embed
        x = x.flatten(2).transpose(1, 2) + pos[:, 1:]  # (B, N, D)
        x = torch.gather(x, 1, keep[:, :, None].expand(-1, -1, x.shape[2]))  # (B, K, D)
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return self.norm(self.blocks(torch.cat([cls, x], dim=1)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.global_pool == "token" else x[:, 1:].mean(1)  # (B, D)
        if pre_logits:
            return x
        return self.head(F.dropout(x, self.drop_rate, self.training))

    def remap_state_dict(self, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision keys -> timm keys (timm's pass unchanged); position embeddings resized
        to this model's grid."""
        if "conv_proj.weight" in sd:
            renamed = {}
            for key, v in sd.items():
                for pattern, repl in _TORCHVISION_KEYS:
                    key = re.sub(pattern, repl, key)
                renamed[key] = v
            sd = renamed
        if "pos_embed" in sd and sd["pos_embed"].shape != self.pos_embed.shape:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], self.grid, self.num_prefix_tokens)
        return sd


def _vit(dim: int, depth: int, heads: int, num_classes=1000, in_chans=3, img_size=224, drop_rate=0.0,
         drop_path_rate=0.0, **kw) -> VisionTransformer:
    return VisionTransformer(dim, depth, heads, num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kw)


@register_model(family="vit", default_img_size=224, min_img_size=16)
def vit_tiny(**kw):
    """ViT-Ti (D 192, 12 blocks, 3 heads), patch size by the rule above: 5.72M parameters at 224 px."""
    return _vit(192, 12, 3, **kw)


@register_model(family="vit", default_img_size=224, min_img_size=16)
def vit_small(**kw):
    """ViT-S (D 384, 12 blocks, 6 heads): 22.05M parameters at 224 px."""
    return _vit(384, 12, 6, **kw)


@register_model(family="vit", default_img_size=224, min_img_size=16)
def vit_base(**kw):
    """ViT-B (D 768, 12 blocks, 12 heads): 86.57M parameters at 224 px (patch 16)."""
    return _vit(768, 12, 12, **kw)


@register_model(family="vit", default_img_size=224, min_img_size=32)
def vit_tiny_patch16_224(**kw):
    """ViT-Ti/16 at any input size (timm's name): 16-px patches whatever the size."""
    return _vit(192, 12, 3, patch_size=16, **kw)


@register_model(family="vit", default_img_size=224, min_img_size=32)
def vit_small_patch16_224(**kw):
    return _vit(384, 12, 6, patch_size=16, **kw)


@register_model(family="vit", default_img_size=224, min_img_size=32)
def vit_base_patch16_224(**kw):
    """ViT-B/16 (timm's and torchvision's vit_b_16): 86.57M parameters at 224 px."""
    return _vit(768, 12, 12, patch_size=16, **kw)
