"""The 15 common corruptions of Hendrycks & Dietterich (2019) as batched tensor ops.

`corrupt(x, name, severity)` takes pixels in [0, 1], (B, C, H, W) with C = 1 or 3 and any
size, and returns the corrupted batch in [0, 1] on the same device. The constants are those
of the `imagecorruptions` package (the reference used in the tests); each function says
how it maps onto the reference code. Random parameters (noise, angles, crops, shuffles) are
keyword arguments drawn from `generator` when not given, so tests can pass the reference's
own draws; `generator` is one torch.Generator for the batch or per-image draws
(foveal.robustness.draws.ImageDraws), which make each image's corruption independent of its
batch. Gray images follow the reference's path for gray input (replicated to RGB), which for
every corruption but frost keeps the three channels equal; frost uses the luma of its texture.

Why by hand: `imagecorruptions` works one uint8 image at a time with numpy, scipy, OpenCV
and PIL on the CPU; this runs a batch at once on the model's device.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from . import draws as D
from . import kernels as K
from .draws import Gen
from .jpeg import jpeg_roundtrip

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)


def _c(table: list, severity: int):
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity {severity!r} is not one of 1..5")
    return table[severity - 1]


def _rand(shape, gen: Gen, x: torch.Tensor) -> torch.Tensor:
    return D.rand(shape, gen, x.device)


def _randn(shape, gen: Gen, x: torch.Tensor) -> torch.Tensor:
    return D.randn(shape, gen, x.device)


# ---- noise -----------------------------------------------------------------------------------------

def gaussian_noise(x: torch.Tensor, severity: int, gen: Gen = None, *, z: Optional[torch.Tensor] = None):
    """x + N(0, c^2) per element; `z` standard-normal draws of x's shape."""
    c = _c([.08, .12, 0.18, 0.26, 0.38], severity)
    z = _randn(x.shape, gen, x) if z is None else z
    return (x + c * z).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, gen: Gen = None):
    """Poisson(x c) / c per element."""
    c = _c([60, 25, 12, 5, 3], severity)
    return (D.poisson(x * c, gen) / c).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, gen: Gen = None):
    """skimage random_noise(mode='s&p'): each element is replaced with prob c, by 0 or 1 with equal odds."""
    c = _c([.03, .06, .09, 0.17, 0.27], severity)
    flip, salt = _rand(x.shape, gen, x) <= c, _rand(x.shape, gen, x) <= 0.5
    return torch.where(flip, salt.to(x), x)


# ---- blur ------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """imagecorruptions.disk: a normalized disk on a 17x17 (or 2r+1) grid, smoothed by cv2.GaussianBlur."""
    L = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    ks = 3 if radius <= 8 else 5
    X, Y = np.meshgrid(L, L)
    d = torch.from_numpy(((X ** 2 + Y ** 2) <= radius ** 2).astype(np.float32))
    d = d / d.sum()
    t = K.cv_gauss_taps(ks, alias_blur)
    return K.sep_filter(d[None, None], t, t, "reflect101")[0, 0]


def defocus_blur(x: torch.Tensor, severity: int, gen: Gen = None):
    r, a = _c([(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)], severity)
    return K.filter2d(x, disk_kernel(r, a)).clamp(0, 1)


def glass_blur(x: torch.Tensor, severity: int, gen: Gen = None, *, shifts: Optional[list] = None):
    """Gaussian blur, uint8 truncation, local pixel shuffles, Gaussian blur again.

    The reference visits each interior pixel p in reverse raster order and "swaps" it with a
    random neighbour q = p + (dy, dx), offsets in [-d, d-1], by
    `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on HxWx3 numpy views: the right side holds two
    views, so both end up with q's value, a copy, not a swap (kept: it defines ImageNet-C's
    glass blur). So p's new value is q's new value when q was visited earlier (q interior
    with a larger raster index), else q's old value: a chain of pointers, which we resolve
    for all pixels at once by pointer jumping (log2(H W) gathers) instead of H W sequential
    steps. Given the same draws the result is the reference's exactly.
    `shifts`: optional list (one per iteration) of (B, 2, H, W) int offsets (dy, dx).
    """
    sigma, d, iters = _c([(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)], severity)
    B, C, H, W = x.shape
    y = torch.floor(K.sk_gaussian(x, sigma) * 255) / 255  # np.uint8(... * 255) truncates
    flat = y.reshape(B, C, H * W)
    hh = torch.arange(H, device=x.device).view(H, 1).expand(H, W)
    ww = torch.arange(W, device=x.device).view(1, W).expand(H, W)
    interior = ((hh >= d + 1) & (hh <= H - d) & (ww >= d + 1) & (ww <= W - d)).reshape(-1)  # (HW,)
    idx = torch.arange(H * W, device=x.device)
    for it in range(iters):
        sh = shifts[it].to(x.device) if shifts is not None else D.randint(-d, d, (B, 2, H, W), gen, x.device)
        q = ((hh + sh[:, 0]).clamp(0, H - 1) * W + (ww + sh[:, 1]).clamp(0, W - 1)).reshape(B, -1)  # (B, HW)
        q = torch.where(interior, q, idx)  # border pixels are never written: they keep their own value
        done = ~(interior & interior[q] & (q > idx))  # (B, HW): p's value is old[q] (True) or new[q] (False)
        for _ in range(max(1, (H * W).bit_length())):  # pointer jumping: chains of length < 2^k resolve in k steps
            done_next = done.gather(1, q)
            q = torch.where(done, q, q.gather(1, q))
            done = done | done_next
        flat = flat.gather(2, q[:, None].expand(B, C, -1))
    return K.sk_gaussian(flat.view(B, C, H, W), sigma).clamp(0, 1)


def motion_blur(x: torch.Tensor, severity: int, gen: Gen = None, *, angle: Optional[torch.Tensor] = None):
    """imagecorruptions._motion_blur with radius/sigma c and angle ~ U(-45, 45) degrees per image."""
    r, s = _c([(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)], severity)
    angle = _rand(len(x), gen, x) * 90 - 45 if angle is None else angle
    return K.motion_blur(x, r, s, angle).clamp(0, 1)


_ZOOMS = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02), np.arange(1, 1.26, 0.02),
          np.arange(1, 1.31, 0.03)]  # numpy's own arange, so the factor lists match the reference exactly


def zoom_blur(x: torch.Tensor, severity: int, gen: Gen = None):
    """Mean of the image and its centre zooms by each factor (scipy zoom, order 1)."""
    zs = _c(_ZOOMS, severity)
    H, W = x.shape[-2:]
    out = x.clone()
    for z in zs:
        out = out + K.clipped_zoom(x, float(z))[..., :H, :W]
    return (out / (len(zs) + 1)).clamp(0, 1)


# ---- weather ---------------------------------------------------------------------------------------

def _gray(x: torch.Tensor) -> torch.Tensor:
    """cv2 RGB2GRAY luma (0.299, 0.587, 0.114); a 1-channel image is its own gray."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def snow(x: torch.Tensor, severity: int, gen: Gen = None, *, layer: Optional[torch.Tensor] = None,
         angle: Optional[torch.Tensor] = None):
    """Zoomed, thresholded, motion-blurred noise flakes over a whitened image.

    `layer`: (B, H, W) standard-normal draws (the reference's N(loc, scale) field is loc + scale z);
    `angle`: (B,) degrees in [-135, -45].
    """
    loc, scale, zoom, thr, rad, sig, keep = _c([(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                                                (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                                                (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)], severity)
    B, C, H, W = x.shape
    z = _randn((B, H, W), gen, x) if layer is None else layer
    angle = _rand(B, gen, x) * 90 - 135 if angle is None else angle
    s = K.clipped_zoom((loc + scale * z)[:, None], zoom)  # (B, 1, h', w'), h' >= H
    s = torch.where(s < thr, torch.zeros_like(s), s).clamp(0, 1)
    s = K.motion_blur(s, rad, sig, angle)
    s = (torch.round(s * 255).clamp(0, 255) / 255)[..., :H, :W]  # the reference rounds the layer to uint8
    x = keep * x + (1 - keep) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return (x + s + s.flip(-1, -2)).clamp(0, 1)


def _frost_dir() -> Optional[Path]:
    import importlib.util

    spec = importlib.util.find_spec("imagecorruptions")  # located without importing it (it needs cv2 etc.)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "frost"
    return d if d.is_dir() else None


@functools.lru_cache(maxsize=1)
def frost_images() -> tuple[tuple[torch.Tensor, ...], str]:
    """The five frost photographs the reference draws from, as (3, h, w) RGB float [0, 255] tensors.

    Read from the installed `imagecorruptions` package; without it, five procedural frost
    textures stand in (and `frost` results are then not comparable to ImageNet-C's).
    """
    d = _frost_dir()
    if d is not None:
        from PIL import Image

        names = ["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]
        imgs = tuple(torch.from_numpy(np.asarray(Image.open(d / n).convert("RGB"), dtype=np.float32).copy())
                     .permute(2, 0, 1) for n in names)
        return imgs, "imagecorruptions"
    return tuple(procedural_frost(i) for i in range(5)), "procedural"


def procedural_frost(seed: int, size: int = 384) -> torch.Tensor:
    """A stand-in frost texture: bright thin ridges of multi-octave noise with a cold tint, (3, s, s) in [0, 255]."""
    g = torch.Generator().manual_seed(1234 + seed)
    m = K.plasma_fractal(1, size if size & (size - 1) == 0 else 512, 1.6, g)[0, :size, :size]
    ridges = (1 - (2 * m - 1).abs()) ** 6  # thin crystalline lines where the field crosses its mid level
    tex = (0.55 * ridges + 0.35 * m).clamp(0, 1) * 255
    return torch.stack([tex * 0.88, tex * 0.95, tex])


def frost(x: torch.Tensor, severity: int, gen: Gen = None, *, idx: Optional[torch.Tensor] = None,
          offsets: Optional[torch.Tensor] = None):
    """c0 x + c1 frost, the frost a random crop of one of five textures rescaled by 1.1 (bicubic).

    `idx`: (B,) texture index in 0..4; `offsets`: (B, 2) crop corner (row, column).
    """
    c0, c1 = _c([(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)], severity)
    B, C, H, W = x.shape
    texs = _scaled_frost(H, W, str(x.device))
    idx = D.randint(0, 5, (B,), gen, x.device) if idx is None else idx
    crops = []
    for b, i in enumerate(idx.tolist()):  # one host read of B small ints: crop corners differ per texture size
        t = texs[i]
        if offsets is None:
            g = D.image_generator(gen, b)
            r0 = int(torch.randint(0, t.shape[1] - H, (1,), generator=g, device=x.device))
            c0_ = int(torch.randint(0, t.shape[2] - W, (1,), generator=g, device=x.device))
        else:
            r0, c0_ = (int(v) for v in offsets[b])
        crops.append(t[:, r0:r0 + H, c0_:c0_ + W])
    fr = torch.stack(crops) / 255  # (B, 3, H, W)
    fr = fr if C == 3 else _gray(fr)
    return (c0 * x + c1 * fr).clamp(0, 1)


@functools.lru_cache(maxsize=16)
def _scaled_frost(H: int, W: int, device: str) -> tuple[torch.Tensor, ...]:
    """Each texture rescaled as the reference does for an H x W image (cv2.INTER_CUBIC = bicubic, a = -0.75)."""
    from torch.nn import functional as F

    out = []
    for t in frost_images()[0]:
        fh, fw = t.shape[1:]
        s = 1.0 if fh >= H and fw >= W else (H / fh if fw >= W else W / fw if fh >= H else max(H / fh, W / fw))
        s *= 1.1
        size = (int(np.ceil(fh * s)), int(np.ceil(fw * s)))
        r = F.interpolate(t[None], size=size, mode="bicubic", align_corners=False)[0]
        out.append(r.round().clamp(0, 255).to(device))
    return tuple(out)


def fog(x: torch.Tensor, severity: int, gen: Gen = None, *, plasma: Optional[torch.Tensor] = None):
    """Add a diamond-square plasma map (per image), then rescale by max / (max + c0). `plasma`: (B, M, M)."""
    c0, decay = _c([(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)], severity)
    B, C, H, W = x.shape
    M = 1 << (max(H, W, C) - 1).bit_length()  # next power of 2, as the reference
    if plasma is None and isinstance(gen, D.ImageDraws):
        plasma = torch.cat([K.plasma_fractal(1, M, decay, g, x.device) for g in gen.generators])
    elif plasma is None:
        plasma = K.plasma_fractal(B, M, decay, gen, x.device)
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    y = x + c0 * plasma[:, None, :H, :W].to(x)
    return (y * mx / (mx + c0)).clamp(0, 1)


# ---- digital ---------------------------------------------------------------------------------------

def brightness(x: torch.Tensor, severity: int, gen: Gen = None):
    """HSV value + c (RGB), x + c (gray). With hue and saturation fixed, RGB scales with V: x V'/V."""
    c = _c([.1, .2, .3, .4, .5], severity)
    if x.shape[1] == 1:
        return (x + c).clamp(0, 1)
    v = x.amax(1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, gen: Gen = None):
    """(x - mean) c + mean, the mean per image and channel."""
    c = _c([0.4, .3, .2, .1, .05], severity)
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


def elastic_transform(x: torch.Tensor, severity: int, gen: Gen = None, *, uv: Optional[torch.Tensor] = None):
    """Resample at (y + dy, x + dx), d = alpha * gaussian(U(-m, m)) (scipy map_coordinates, linear, reflect).

    `uv`: (B, 2, H, W) uniform draws in [0, 1) for (dx, dy), as the reference's uniform(-m, m) = m (2u - 1).
    """
    alpha = _c([250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12], severity)
    B, C, H, W = x.shape
    sigma = (H * 0.01, W * 0.01)
    m = H * 0.005  # the reference uses the height for both directions
    uv = _rand((B, 2, H, W), gen, x) if uv is None else uv
    d = K.sk_gaussian((2 * uv.to(x) - 1) * m, sigma, mode="reflect", truncate=3) * alpha  # (B, 2, H, W)
    ys = torch.arange(H, device=x.device, dtype=x.dtype).view(1, H, 1) + d[:, 1]
    xs = torch.arange(W, device=x.device, dtype=x.dtype).view(1, 1, W) + d[:, 0]
    return K.linear_sample_reflect(x, ys, xs).clamp(0, 1)


def pixelate(x: torch.Tensor, severity: int, gen: Gen = None):
    """PIL resize to int(size c) with BOX, then back with NEAREST (8-bit, as PIL does)."""
    c = _c([0.6, 0.5, 0.4, 0.3, 0.25], severity)
    H, W = x.shape[-2:]
    small = K.pil_resize((x * 255).round(), int(H * c), int(W * c), "box")
    return K.pil_resize(small, H, W, "nearest") / 255


def jpeg_compression(x: torch.Tensor, severity: int, gen: Gen = None):
    """JPEG at quality c (see foveal.robustness.jpeg)."""
    q = _c([25, 18, 15, 10, 7], severity)
    return jpeg_roundtrip(x * 255, q) / 255


# ---- entry point -----------------------------------------------------------------------------------

FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {n: globals()[n] for n in CORRUPTIONS}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: Gen = None) -> torch.Tensor:
    """Corrupt a batch of (B, C, H, W) pixels in [0, 1] (C = 1 or 3) with a corruption at severity 1..5."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"corruptions take (B, C, H, W) images with C = 1 or 3, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"corruptions take float pixels in [0, 1], got dtype {x.dtype}")
    return FUNCTIONS[name](x, severity, generator)
