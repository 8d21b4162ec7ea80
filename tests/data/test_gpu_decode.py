"""JPEGs decoded on the device (foveal.data.gpu_decode). The CUDA checks are marked `gpu`; the same code path
runs here on the CPU (torchvision decodes JPEG batches on the CPU too), against the CPU loader's pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from foveal.config import DataConfig
from foveal.data.decode import DecodeError
from foveal.data.gpu_decode import decode_jpegs, fit_square, read_checked
from foveal.data.loader import BatchPlan
from foveal.data.sources import load_source
from foveal.data.stream import StreamLoader


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """JPEGs of several sizes (one EXIF-rotated, one gray), a PNG, a broken file, two classes."""
    root = tmp_path_factory.mktemp("gpudec") / "photos"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            base = rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)
            img = Image.fromarray(base).resize((90 + 13 * i, 70 + 7 * i), Image.Resampling.BICUBIC)
            img.save(root / c / f"{i:02d}.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(root / "a" / "03.jpg").save(root / "a" / "rot.jpg", quality=92, exif=exif)
    Image.open(root / "a" / "04.jpg").convert("L").save(root / "a" / "gray.jpg", quality=92)
    Image.open(root / "b" / "05.jpg").save(root / "b" / "p.png")
    (root / "b" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def _batches(folder: Path, device_decode: bool, resize: str = "squash") -> tuple[list[torch.Tensor], list[str]]:
    split = load_source(DataConfig(source=str(folder), in_memory=False, in_chans=3, resize=resize,
                                   crop_pct=0.875), 32).splits["all"]
    loader = StreamLoader(split, BatchPlan(8, shuffle=False), torch.device("cpu"), [0.0] * 3, [1 / 255] * 3,
                          workers=2, refill=False, device_decode=device_decode)
    return [x for x, _ in loader], loader.problems


@pytest.mark.parametrize("resize", ["squash", "crop"])
def test_device_decoding_matches_the_cpu_loader(folder, resize):
    """Same batches, same images, pixels within a few levels (full decode + antialiased resize against
    draft-mode decode + Pillow's resize); the PNG goes through the CPU path exactly; the broken file is named."""
    cpu, cpu_problems = _batches(folder, False, resize)
    dev, dev_problems = _batches(folder, True, resize)
    assert [len(x) for x in cpu] == [len(x) for x in dev]
    a, b = torch.cat(cpu), torch.cat(dev)  # normalized with std 1/255: pixel levels
    diff = (a - b).abs().mean(dim=(1, 2, 3))
    # 'crop' cuts on whole pixels where Pillow's fit resamples a fractional box: a sub-pixel shift, a few levels
    # more on these noise-textured images. A wrong orientation or channel order costs tens of levels.
    limit = {"squash": (6, 3), "crop": (9, 4)}[resize]
    assert diff.max() < limit[0] and diff.mean() < limit[1], diff
    assert any("zz_broken.jpg" in p for p in dev_problems) and any("zz_broken.jpg" in p for p in cpu_problems)


def test_fit_square_crops_like_pillow():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (60, 100, 3)).astype(np.uint8)).filter(
        __import__("PIL.ImageFilter", fromlist=["x"]).GaussianBlur(2))
    ref = np.asarray(ImageOps.fit(img, (24, 24), Image.Resampling.BILINEAR, bleed=(1 - 0.875) / 2)).astype(float)
    got = fit_square(torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()), 24, "crop", 0.875)
    assert got.shape == (3, 24, 24)
    assert np.abs(got.numpy().transpose(1, 2, 0) - ref).mean() < 4


def test_pixel_limit_and_non_jpegs(folder):
    split = load_source(DataConfig(source=str(folder), in_memory=False, in_chans=3, max_pixels=5000), 32).splits["all"]
    k = next(i for i, p in enumerate(split.paths) if p.endswith("11.jpg"))
    with pytest.raises(DecodeError, match="over the limit"):
        read_checked(split.images, k)
    png = (folder / "b" / "p.png").read_bytes()
    assert decode_jpegs([png, b""], 3, torch.device("cpu")) == [None, None]  # left to the CPU path


@pytest.mark.gpu
def test_cuda_decoding_equals_cpu_and_never_corrupts(folder):
    """nvJPEG against the CPU decoder, full size: mean absolute difference at most 2/255 per image; 200 repeated
    batches (the allocator reusing memory between them) give the first batch's pixels every time."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    files = sorted(folder.rglob("*.jpg"))
    files = [f for f in files if "broken" not in f.name]
    datas = [f.read_bytes() for f in files]
    cuda = decode_jpegs(datas, 3, torch.device("cuda"))
    cpu = decode_jpegs(datas, 3, torch.device("cpu"))
    for f, g, c in zip(files, cuda, cpu):
        assert g is not None and g.shape == c.shape, f
        assert (g.cpu().float() - c.float()).abs().mean() <= 2.0, f
    first = [g.clone() for g in cuda]
    for _ in range(200):
        again = decode_jpegs(datas, 3, torch.device("cuda"))
        junk = torch.empty(64 << 20, dtype=torch.uint8, device="cuda").fill_(7)  # churn the caching allocator
        del junk
        assert all(torch.equal(a, b) for a, b in zip(first, again))
