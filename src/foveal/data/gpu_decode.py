"""Batches of JPEGs decoded on the GPU, then cropped and resized there (CUDA streaming, `data.gpu_decode`).

A CPU decodes full-size photos at a few hundred per core and second, below what one fast GPU trains on;
nvJPEG (`torchvision.io.decode_jpeg(list, device="cuda")`) decodes a batch in one call. The bytes are read
on the CPU (decoder threads, ahead of the loop, as for CPU decoding); each batch is decoded, turned upright
(EXIF), converted to the run's channels, cropped and resized on the device. Files that are not JPEGs, or
that nvJPEG refuses (CMYK, progressive corner cases, broken files), are decoded by the CPU path instead,
so every file decodes as it would without this. Hopper GPUs' hardware decoder ignores the current CUDA
stream (pytorch/vision issue 9606): the stream is synchronized before each call, so the decoder never
writes into memory the caching allocator has just handed back.

Pixels differ slightly from the CPU path's (full decode + antialiased bilinear resize here, Pillow's
draft-mode decode + bilinear there): a few levels of 255 after resizing (tests/data/test_gpu_decode.py).
"""

from __future__ import annotations

import io
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .decode import DecodeError

JPEG_SOI = b"\xff\xd8"


def read_checked(images: Any, i: int) -> bytes:
    """Image i's bytes, refused (DecodeError) above the store's pixel limit, as the CPU path refuses them."""
    data = images.read_bytes(i)
    if not data:
        raise DecodeError(f"'{images.paths[i]}': empty file (0 bytes)")
    if data[:2] == JPEG_SOI:
        try:
            with Image.open(io.BytesIO(data)) as probe:  # the header only
                w, h = probe.size
        except Exception as e:
            raise DecodeError(f"'{images.paths[i]}': cannot decode ({type(e).__name__}: {e})") from None
        if w * h > images.max_pixels:
            raise DecodeError(f"'{images.paths[i]}': declares {w}x{h} = {w * h:,} pixels, over the limit of "
                              f"{images.max_pixels:,} (a decompression bomb, or raise data.max_pixels)")
    return data


def fit_square(x: torch.Tensor, size: int, resize: str, crop_pct: float) -> torch.Tensor:
    """(C, H, W) uint8 -> (C, size, size) uint8 on its device: 'squash' resizes the whole image, 'crop' takes
    the centre square of side crop_pct x the shorter side first (the CPU path's ImageOps.fit)."""
    if resize == "crop":
        H, W = x.shape[-2:]
        side = max(1, round(min(H, W) * crop_pct))
        top, left = (H - side) // 2, (W - side) // 2
        x = x[:, top:top + side, left:left + side]
    if x.shape[-2:] == (size, size):
        return x
    y = F.interpolate(x[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y[0].round_().clamp_(0, 255).to(torch.uint8)


def decode_jpegs(datas: Sequence[bytes], chans: int, device: torch.device) -> list[Optional[torch.Tensor]]:
    """(C, H, W) uint8 on `device` for each JPEG that decodes, None for the others (to decode on the CPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if chans == 1 else ImageReadMode.RGB
    out: list[Optional[torch.Tensor]] = [None] * len(datas)
    todo = [k for k, d in enumerate(datas) if d[:2] == JPEG_SOI]
    if not todo:
        return out
    raw = [torch.frombuffer(bytearray(datas[k]), dtype=torch.uint8) for k in todo]
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # the Hopper decoder ignores the stream (see above)
    try:
        got = decode_jpeg(raw, mode=mode, device=device, apply_exif_orientation=True)
    except RuntimeError:  # one file spoils the batch call: one by one, to keep the others on the device
        got = []
        for r in raw:
            try:
                if device.type == "cuda":
                    torch.cuda.current_stream(device).synchronize()
                got.append(decode_jpeg(r, mode=mode, device=device, apply_exif_orientation=True))
            except RuntimeError:
                got.append(None)
    for k, img in zip(todo, got):
        out[k] = img
    return out


def decode_batch_on(images: Any, indices: Sequence[int], datas: Sequence[Optional[bytes | DecodeError]],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """`stream.decode_batch`'s result with x already on `device`: JPEGs decoded there, the rest by the CPU
    path (`images.decode`); `datas`: each index's bytes from `read_checked`, or the DecodeError it raised."""
    C, S = images.in_chans, images.img_size
    x = torch.zeros((len(indices), C, S, S), dtype=torch.uint8, device=device)
    ok = np.ones(len(indices), dtype=bool)
    errors: list[str] = []
    usable = [d if isinstance(d, (bytes, bytearray)) else b"" for d in datas]
    decoded = decode_jpegs(usable, C, device)
    for k, (i, d, img) in enumerate(zip(indices, datas, decoded)):
        if isinstance(d, DecodeError):
            ok[k] = False
            errors.append(str(d))
            continue
        try:
            x[k] = fit_square(img, S, images.resize, images.crop_pct) if img is not None \
                else images.decode(i).to(device, non_blocking=True)
        except DecodeError as e:
            ok[k] = False
            errors.append(str(e))
    return x, torch.from_numpy(ok), torch.as_tensor(indices, dtype=torch.int64), errors


def read_batch(images: Any, indices: Sequence[int]) -> list[bytes | DecodeError]:
    """Each index's bytes, or the DecodeError reading it raised (a decoder thread's part of a GPU batch)."""
    out: list[bytes | DecodeError] = []
    for i in indices:
        try:
            out.append(read_checked(images, i))
        except (DecodeError, OSError) as e:
            out.append(e if isinstance(e, DecodeError) else DecodeError(f"'{images.paths[i]}': {e}"))
    return out
