"""Decoder edge cases: each file either loads correctly or is reported by name and skipped."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foveal.config import DataConfig
from foveal.data.decode import DecodeError, load_image, open_image
from foveal.data.sources import load_folder


def write_truncated_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_text_as_png(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def write_cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    return path


def write_png16(path: Path) -> Path:
    a = np.zeros((16, 16), np.uint16)
    a[:, 8:] = 65535  # right half at full 16-bit white
    a[:8, :8] = 32768  # top-left quarter at mid grey
    Image.fromarray(a).save(path)  # mode I;16
    return path


def write_palette_transparent(path: Path) -> Path:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))  # index 0 black, index 1 red
    img.paste(1, (0, 0, 8, 16))  # left half red
    img.save(path, transparency=0)  # black (right half) is transparent
    return path


def write_exif_rotated(path: Path) -> Path:
    """Stored with its *bottom* half white and EXIF orientation 6 (rotate 90 degrees clockwise to view):
    shown correctly, the *left* half is white and the image is 20 wide by 40 tall."""
    a = np.zeros((20, 40), np.uint8)  # stored 40 wide x 20 tall
    a[10:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).convert("RGB").save(path, exif=exif, quality=95)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 100_000) -> Path:
    """A 100-byte PNG whose header declares side x side pixels (10 gigapixels)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + png_chunk(b"IEND", b""))
    return path


def test_truncated_jpeg_is_reported(tmp_path):
    p = write_truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(DecodeError, match="cut.jpg.*cannot decode"):
        load_image(p, 32, 3)


def test_zero_byte_file_is_reported(tmp_path):
    p = write_zero_byte(tmp_path / "empty.png")
    with pytest.raises(DecodeError, match="empty.png.*empty file"):
        load_image(p, 32, 3)


def test_text_with_image_extension_is_reported(tmp_path):
    p = write_text_as_png(tmp_path / "notes.png")
    with pytest.raises(DecodeError, match="notes.png.*not an image"):
        load_image(p, 32, 3)


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    x = load_image(write_cmyk_jpeg(tmp_path / "cmyk.jpg"), 16, 3)
    r, g, b = (x[c].float().mean().item() for c in range(3))
    assert x.shape == (3, 16, 16) and r > 230 and g < 30 and b < 30  # still red


def test_png16_maps_full_range(tmp_path):
    x = load_image(write_png16(tmp_path / "deep.png"), 16, 1)[0]
    assert x[:, 8:].min() == 255 and x[8:, :8].max() == 0  # white stays white, black stays black
    assert abs(int(x[2, 2]) - 128) <= 1  # 32768/65535 of the range, not clipped to 255


def test_palette_png_transparency_over_white(tmp_path):
    x = load_image(write_palette_transparent(tmp_path / "pal.png"), 16, 3)
    assert x[:, :, 10:].min() == 255  # transparent half composited over white, not black
    assert x[0, :, :6].min() > 240 and x[1, :, :6].max() < 15  # opaque half stays red


def test_exif_orientation_is_applied(tmp_path):
    p = write_exif_rotated(tmp_path / "rot.jpg")
    assert open_image(p).size == (20, 40)  # (width, height) as viewed
    x = load_image(p, 40, 1)[0].float()
    assert x[:, :16].mean() > 240 and x[:, 24:].mean() < 15  # left half white after orientation


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = write_png_bomb(tmp_path / "bomb.png")
    with pytest.raises(DecodeError, match="bomb.png.*(decompression bomb|DecompressionBomb)"):
        load_image(p, 32, 1)
    small = write_png16(tmp_path / "ok.png")  # the configured limit applies to ordinary files too
    with pytest.raises(DecodeError, match="ok.png.*over the limit of 100"):
        load_image(small, 16, 1, max_pixels=100)


def test_folder_run_skips_bad_files_by_name(tmp_path):
    root = tmp_path / "data"
    bad = {"cut.jpg": write_truncated_jpeg, "empty.png": write_zero_byte, "notes.png": write_text_as_png,
           "bomb.png": write_png_bomb}
    good = {"cmyk.jpg": write_cmyk_jpeg, "deep.png": write_png16, "pal.png": write_palette_transparent,
            "rot.jpg": write_exif_rotated}
    for i, (name, fn) in enumerate({**bad, **good}.items()):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        fn(d / name)
    bundle = load_folder(root, DataConfig(in_chans=3), 16)
    kept = {Path(p).name for p in bundle.splits["all"].paths}
    assert kept == set(good)
    for name in bad:
        assert sum(name in msg for msg in bundle.problems) == 1, (name, bundle.problems)
    assert bundle.splits["all"].images.shape == (4, 3, 16, 16)
