"""Occlusion sensitivity (Zeiler and Fergus 2014): how much the target class probability
drops when a square of the image is replaced by the baseline (zeros in normalized space,
the data set's mean colour). Model-agnostic: it needs only forward passes.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import EXPLAINERS, normalize_maps


def _windows(size: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, max(size - window, 0) + 1, stride))
    if starts[-1] + window < size:  # cover the border too
        starts.append(size - window)
    return starts


@EXPLAINERS.register("occlusion")
@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, window: int | None = None,
              stride: int | None = None, chunk: int | str = "auto") -> torch.Tensor:
    """Per-pixel mean probability drop over the windows covering it; window defaults to 1/4 of
    the side (stride half of it): 49 forward passes per image, `chunk` occluded images per pass
    ('auto': sized by memory, foveal.batching)."""
    from ..batching import resolve_batch_size

    B, C, H, W = x.shape
    chunk = resolve_batch_size(chunk, model, (C, H, W), x.device)
    window = window or max(1, min(H, W) // 4)
    stride = stride or max(1, window // 2)
    boxes = [(i, j) for i in _windows(H, window, stride) for j in _windows(W, window, stride)]
    base = torch.softmax(model(x).float(), 1).gather(1, target[:, None])  # (B, 1)
    drops = torch.zeros(B, H, W, device=x.device)
    counts = torch.zeros(H, W, device=x.device)
    per = max(1, chunk // B)  # windows per forward pass
    for k in range(0, len(boxes), per):
        part = boxes[k:k + per]
        xs = x[None].repeat(len(part), 1, 1, 1, 1)  # (P, B, C, H, W)
        for n, (i, j) in enumerate(part):
            xs[n, :, :, i:i + window, j:j + window] = 0
        p = torch.softmax(model(xs.flatten(0, 1)).float(), 1).view(len(part), B, -1)
        drop = base[None, :, 0] - p.gather(2, target[None, :, None].expand(len(part), B, 1))[..., 0]  # (P, B)
        for n, (i, j) in enumerate(part):
            drops[:, i:i + window, j:j + window] += drop[n][:, None, None]
            counts[i:i + window, j:j + window] += 1
    return normalize_maps(drops / counts.clamp_min(1))
