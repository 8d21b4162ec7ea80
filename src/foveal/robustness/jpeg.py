"""Batched baseline JPEG round trip (encode + decode) as tensor ops, standing in for PIL/libjpeg.

Why by hand: JPEG through PIL is one image at a time on the CPU; this does a whole batch on the
model's device. It follows what PIL's `save(..., 'JPEG', quality=q)` + `Image.open` do with
libjpeg defaults: JFIF RGB->YCbCr, 4:2:0 chroma subsampling by 2x2 averaging, IJG quality
scaling of the standard (Annex K) tables, 8x8 DCT, rounding quantization, and "fancy"
(triangular) chroma upsampling on decode. Differences from libjpeg (its integer DCT and
fixed-point colour conversion) leave rounding-level differences (tolerance in the tests).
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as F

_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32


def quant_table(base: list[int], quality: int) -> torch.Tensor:
    """IJG jpeg_set_quality scaling (baseline: entries clamped to 1..255), as an (8, 8) table."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    t = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(t, dtype=torch.float32).view(8, 8)


@functools.lru_cache(maxsize=4)
def dct_matrix() -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix D: coefficients = D @ block @ D.T (JPEG's FDCT up to scale)."""
    d = torch.zeros(8, 8, dtype=torch.float64)
    for k in range(8):
        for n in range(8):
            d[k, n] = (math.sqrt(1 / 8) if k == 0 else math.sqrt(2 / 8)) * math.cos(math.pi * (2 * n + 1) * k / 16)
    return d.float()


def _blocks_roundtrip(p: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Quantize one plane (N, H, W) of level-shifted samples (H, W multiples of 8) through DCT blocks."""
    N, H, W = p.shape
    D = dct_matrix().to(p)
    b = p.view(N, H // 8, 8, W // 8, 8).transpose(2, 3)  # (N, h, w, 8, 8)
    coef = D @ b @ D.T
    q = table.to(p)
    coef = torch.round(coef / q) * q
    return (D.T @ coef @ D).transpose(2, 3).reshape(N, H, W)


def _pad_to(x: torch.Tensor, m: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    return F.pad(x, (0, (-W) % m, 0, (-H) % m), mode="replicate")  # libjpeg replicates edge samples


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """(B, C, H, W) pixels in [0, 255], C in {1, 3} -> the decoded JPEG, [0, 255] integers as float."""
    B, C, H, W = x.shape
    x = x.round().clamp(0, 255)
    ql, qc = quant_table(_LUMA, quality), quant_table(_CHROMA, quality)
    if C == 1:  # gray through RGB has zero chroma, so only luma is quantized
        y = _pad_to(x, 8)[:, 0] - 128
        out = _blocks_roundtrip(y, ql)[:, None, :H, :W] + 128
        return out.round().clamp(0, 255)
    r, g, b_ = x[:, 0], x[:, 1], x[:, 2]
    y = (0.299 * r + 0.587 * g + 0.114 * b_).round()
    cb = (-0.168736 * r - 0.331264 * g + 0.5 * b_ + 128).round()
    cr = (0.5 * r - 0.418688 * g - 0.081312 * b_ + 128).round()
    ypad = _pad_to(y, 16)
    chroma = _pad_to(torch.stack([cb, cr], 1), 16)  # (B, 2, H16, W16)
    chroma = F.avg_pool2d(chroma, 2).round()  # 4:2:0 (libjpeg h2v2_downsample averages 2x2 with alternating bias)
    y_rec = _blocks_roundtrip(ypad - 128, ql) + 128
    Hc, Wc = chroma.shape[-2:]
    c_rec = _blocks_roundtrip(chroma.reshape(B * 2, Hc, Wc) - 128, qc).view(B, 2, Hc, Wc) + 128
    y_rec = y_rec.round().clamp(0, 255)
    c_rec = c_rec.round().clamp(0, 255)
    # libjpeg's fancy h2v2 upsampling is the 3/4-1/4 triangle filter: bilinear 2x, align_corners=False
    c_up = F.interpolate(c_rec, scale_factor=2, mode="bilinear", align_corners=False)
    yy, cb_, cr_ = y_rec[:, :H, :W], c_up[:, 0, :H, :W] - 128, c_up[:, 1, :H, :W] - 128
    rgb = torch.stack([yy + 1.402 * cr_, yy - 0.344136 * cb_ - 0.714136 * cr_, yy + 1.772 * cb_], 1)
    return rgb.round().clamp(0, 255)
