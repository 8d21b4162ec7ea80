"""The one crop-shift: zero-padded for the 'crop' augmentation, reflect-padded for the fast recipe's and the label
check's translate, each equal (values and strides) to the implementation it replaced."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from foveal.config import DataConfig
from foveal.data.augment import PadCrop, crop_shift, translate


def _old_padcrop(x: torch.Tensor, p: int, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    B, C, H, W = x.shape
    xp = F.pad(x, (p, p, p, p))
    rows = (oy[:, None] + torch.arange(H))[:, :, None]
    cols = (ox[:, None] + torch.arange(W))[:, None, :]
    b = torch.arange(B)[:, None, None]
    return xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2).contiguous()


def _old_translate(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    off = torch.randint(0, 2 * pad + 1, (2, B), generator=g)
    rows = (off[0][:, None] + torch.arange(H))[:, None, :, None].expand(B, C, H, W)
    cols = (off[1][:, None] + torch.arange(W))[:, None, None, :].expand(B, C, H, W)
    flat = rows * (W + 2 * pad) + cols
    return xp.reshape(B, C, -1).gather(2, flat.reshape(B, C, -1)).view(rows.shape)


def _images(dtype: torch.dtype, c: int) -> torch.Tensor:
    x = torch.rand(6, c, 9, 7, generator=torch.Generator().manual_seed(c))
    return (x * 255).to(torch.uint8) if dtype == torch.uint8 else x


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_zero_padded_crop_shift_is_the_former_padcrop(dtype: torch.dtype, c: int) -> None:
    x = _images(dtype, c)
    op = PadCrop(DataConfig(pad=3), 10)
    p, off = op.make_params(x, torch.Generator().manual_seed(0))
    out, _ = op(x, torch.zeros(6), torch.Generator().manual_seed(0))
    want = _old_padcrop(x, p, off[0], off[1])
    assert torch.equal(out, want) and out.stride() == want.stride()
    for b in range(6):  # a zero-padded shift: the image moved by (p - offset), zeros where it left
        oy, ox = off[:, b].tolist()
        assert torch.equal(out[b], F.pad(x[b], (p, p, p, p))[:, oy:oy + 9, ox:ox + 7])


@pytest.mark.parametrize("c", [1, 3])
def test_reflect_translate_is_the_former_fast_translate(c: int) -> None:
    """Values and strides: a 1-channel batch with channels-last strides makes the CPU convolution take another
    algorithm (other rounding), so the strides are part of what the recipe's weights depend on."""
    x = _images(torch.float32, c)
    out = translate(x, 2, torch.Generator().manual_seed(1))
    want = _old_translate(x, 2, torch.Generator().manual_seed(1))
    assert torch.equal(out, want) and out.stride() == want.stride() == (c * 63, 63, 7, 1)


def test_crop_shift_offsets_place_the_window() -> None:
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).view(2, 1, 4, 5)
    off = torch.tensor([[0, 2], [2, 1]])  # (row, col) offsets in the padded image: (0, 2) and (2, 1)
    out = crop_shift(x, 1, off, "reflect")
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    assert torch.equal(out[0], xp[0, :, 0:4, 2:7]) and torch.equal(out[1], xp[1, :, 2:6, 1:6])
    assert torch.equal(crop_shift(x, 1, torch.ones(2, 2, dtype=torch.long)), x)  # offset = pad: the identity
