"""Decoding one image file into a uint8 array the model can take.

The same function prepares images for training, evaluation and prediction (eager and ONNX),
so a file is seen identically by all of them. Every failure becomes a `DecodeError` naming
the file. Torch-free (`load_image` imports it on call): the inference install reads images here.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import DataConfig

if TYPE_CHECKING:
    from ..card import ModelCard
    import torch

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


class DecodeError(ValueError):
    """An image file could not be read; the message names the file and the reason."""


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given directly, plus image files found (recursively, sorted) in given folders."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"'{p}' does not exist")
    if not out:
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}")
    return out


def _to_mode(img: Image.Image, in_chans: int) -> Image.Image:
    """Convert any PIL mode (1, L, P, RGBA, CMYK, I;16, I, F, LA...) to 'L' or 'RGB'."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit/32-bit/float images: map their full range to 0..255 instead of clipping at 255.
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and a.min() >= 0 and a.max() <= 1.0:
            a = a * 255.0  # float images in [0, 1]
        elif a.max() > 255:
            a = a * (255.0 / 65535.0)  # 16-bit range
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels are composited over white: the usual look of such images.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
    target = "L" if in_chans == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def open_image(path: str | Path, max_pixels: int = DataConfig.max_pixels, draft_size: int | None = None,
               data: bytes | None = None) -> Image.Image:
    """Open, orient (EXIF) and fully decode an image, or raise DecodeError naming `path`.

    `draft_size` lets JPEG decode at a reduced scale (1/2, 1/4, 1/8) no smaller than it. `data`: the file's
    bytes, already read (an image inside a shard); `path` then only names it in messages.
    """
    path = Path(path) if data is None else path
    try:
        if (len(data) if data is not None else Path(path).stat().st_size) == 0:
            raise DecodeError(f"'{path}': empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise DecodeError(f"'{path}': declares {w}x{h} = {w * h:,} pixels, over the limit of "
                                      f"{max_pixels:,} (a decompression bomb, or raise data.max_pixels)")
                if draft_size and img.format == "JPEG":
                    img.draft(img.mode, (draft_size, draft_size))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
                return img
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(f"'{path}': not an image in a format Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"'{path}': cannot decode ({type(e).__name__}: {e})") from None


def probe_channels(path: str | Path) -> int | None:
    """1 for grayscale files, 3 for colour, None if unreadable; reads only the header."""
    try:
        with Image.open(path) as img:
            return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    except Exception:
        return None


def pil_to_array(img: Image.Image, img_size: int, in_chans: int, resize: str = "squash",
                 crop_pct: float = 1.0) -> np.ndarray:
    """PIL image -> (in_chans, img_size, img_size) uint8 C-contiguous array, resized with antialiasing.
    'crop': the centre square of side crop_pct x the shorter side, resized to img_size (timm's and
    torchvision's eval transform: shorter side to img_size / crop_pct, centre crop img_size)."""
    img = _to_mode(img, in_chans)
    if resize == "crop":  # fit's bleed trims (1 - crop_pct) / 2 of each side before taking the centre square
        img = ImageOps.fit(img, (img_size, img_size), Image.Resampling.BILINEAR, bleed=(1 - crop_pct) / 2)
    elif img.size != (img_size, img_size):
        img = img.resize((img_size, img_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    a = np.asarray(img, dtype=np.uint8)
    a = a[:, :, None] if a.ndim == 2 else a
    return np.ascontiguousarray(a.transpose(2, 0, 1))  # (C, H, W), a writable copy


def read_image(path: str | Path, img_size: int, in_chans: int, resize: str = "squash",
               max_pixels: int = DataConfig.max_pixels, crop_pct: float = 1.0, data: bytes | None = None) -> np.ndarray:
    """Read `path` (or its bytes `data`) as a (in_chans, img_size, img_size) uint8 array, or raise DecodeError."""
    # Draft keeps both sides >= img_size / crop_pct, so the centre crop still covers img_size.
    crop = crop_pct if resize == "crop" else 1.0
    img = open_image(path, max_pixels, draft_size=int(img_size / crop + 0.999), data=data)
    try:
        return pil_to_array(img, img_size, in_chans, resize, crop)
    except (OSError, ValueError) as e:
        raise DecodeError(f"'{path}': cannot convert ({type(e).__name__}: {e})") from None


def read_for(card: ModelCard, path: str | Path, max_pixels: int = DataConfig.max_pixels) -> np.ndarray:
    """`read_image` as the weights' model card says (size, channels, resize rule, crop fraction): what
    predict, serve and the ONNX runtime decode, the same way training decoded."""
    p = card.preprocessing
    return read_image(path, p.img_size, card.in_chans, p.resize, max_pixels, p.crop_pct)


def load_image(path: str | Path, img_size: int, in_chans: int, resize: str = "squash",
               max_pixels: int = DataConfig.max_pixels, crop_pct: float = 1.0, data: bytes | None = None) -> "torch.Tensor":
    """`read_image` as a (in_chans, img_size, img_size) uint8 tensor."""
    import torch

    # Pillow can hand back a read-only buffer; torch tensors must own writable memory.
    return torch.from_numpy(np.require(read_image(path, img_size, in_chans, resize, max_pixels, crop_pct, data),
                                       requirements="W"))
