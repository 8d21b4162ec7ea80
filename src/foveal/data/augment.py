"""Batched augmentation on the training device: no per-image Python in the step.

Each op draws its random parameters for the whole batch first (`make_params`) and then
applies a pure tensor kernel (`apply`), as torchvision's transforms v2 do; all randomness
comes from one `torch.Generator`, so an epoch's augmentation is reproducible from its seed.
Images are float (B, C, H, W) in [0, 1]; labels are (B,) int64 or (B, K) soft targets.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..registry import Registry

AUGMENTS: Registry[type] = Registry("augmentation")


class BatchOp:
    """One augmentation: `make_params` draws randomness, `apply` is a pure kernel."""

    def __init__(self, cfg: DataConfig, num_classes: int):
        self.cfg = cfg
        self.num_classes = num_classes

    def make_params(self, x: torch.Tensor, g: torch.Generator) -> Any:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(x, y, self.make_params(x, g))


def _rand(shape: tuple[int, ...], x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=x.device)


@AUGMENTS.register("flip")
class HFlip(BatchOp):
    """Horizontal flip of half the batch."""

    def make_params(self, x, g):
        return _rand((x.shape[0],), x, g) < 0.5  # (B,) bool

    def apply(self, x, y, flip):
        return torch.where(flip[:, None, None, None], x.flip(3), x), y


@AUGMENTS.register("vflip")
class VFlip(HFlip):
    """Vertical flip of half the batch (aerial, microscopy and medical images)."""

    def apply(self, x, y, flip):
        return torch.where(flip[:, None, None, None], x.flip(2), x), y


@AUGMENTS.register("crop")
class PadCrop(BatchOp):
    """Zero-pad by `data.pad` px per 32 px of input, then crop back at a random offset."""

    def make_params(self, x, g):
        p = max(1, round(self.cfg.pad * x.shape[-1] / 32))
        off = (_rand((2, x.shape[0]), x, g) * (2 * p + 1)).long()  # (2, B) in [0, 2p]
        return p, off

    def apply(self, x, y, params):
        p, (oy, ox) = params
        B, C, H, W = x.shape
        xp = F.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(H, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, :]  # (B, 1, W)
        b = torch.arange(B, device=x.device)[:, None, None]
        return xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2).contiguous(), y  # (B, C, H, W)


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp a batch by (B, 2, 3) affine matrices in normalized coordinates; outside is 0."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTS.register("rotate")
class Rotate(BatchOp):
    """Rotation by a uniform angle in [-data.rotate, +data.rotate] degrees."""

    def make_params(self, x, g):
        return (_rand((x.shape[0],), x, g) * 2 - 1) * math.radians(self.cfg.rotate)  # (B,) radians

    def apply(self, x, y, angle):
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
        return affine(x, theta.to(x.dtype)), y


@AUGMENTS.register("noise")
class GaussianNoise(BatchOp):
    """Additive Gaussian noise of std `data.noise_std` (pixel units in [0, 1]), clamped."""

    def make_params(self, x, g):
        return torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * self.cfg.noise_std

    def apply(self, x, y, noise):
        return (x + noise).clamp_(0, 1), y


class Compose:
    """Apply named ops in order; an empty list is the identity."""

    def __init__(self, names: list[str], cfg: DataConfig, num_classes: int):
        self.ops = [AUGMENTS.get(n)(cfg, num_classes) for n in names]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for op in self.ops:
            x, y = op(x, y, g)
        return x, y

    def __bool__(self) -> bool:
        return bool(self.ops)
