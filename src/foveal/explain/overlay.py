"""Heat maps over images: a matplotlib colormap blended onto the picture, as PNG."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from ..config import ExplainConfig
from ..io import atomic_path

MIN_SIDE = 160  # px: small inputs (28-32 px digits) are enlarged so the map is legible


def overlay(image_u8: torch.Tensor, heat: torch.Tensor, alpha: float = ExplainConfig.alpha,
            cmap: str = "jet") -> np.ndarray:
    """(C, H, W) uint8 image and (H, W) map in [0, 1] -> (H', W', 3) uint8 blend, enlarged to MIN_SIDE."""
    img = image_u8.detach().cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    elif img.shape[0] == 2:  # two-channel images (e.g. Colored MNIST's red and green): an empty blue channel
        img = torch.cat([img, torch.zeros_like(img[:1])])
    img = img[:3]
    rgb = img.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    colored = matplotlib.colormaps[cmap](heat.detach().float().clamp(0, 1).cpu().numpy())[..., :3]
    blend = ((1 - alpha) * rgb + alpha * colored).clip(0, 1)
    out = Image.fromarray((blend * 255).round().astype(np.uint8))
    side = min(out.size)
    if side < MIN_SIDE:
        scale = -(-MIN_SIDE // side)
        out = out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
    return np.asarray(out)


def overlay_png(image_u8: torch.Tensor, heat: torch.Tensor, alpha: float = ExplainConfig.alpha) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(overlay(image_u8, heat, alpha)).save(buf, format="PNG")
    return buf.getvalue()


def save_overlay(path: str | Path, image_u8: torch.Tensor, heat: torch.Tensor,
                 alpha: float = ExplainConfig.alpha) -> None:
    """Write the overlay PNG atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(overlay_png(image_u8, heat, alpha))
