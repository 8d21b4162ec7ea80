"""Each corruption at each severity against the `imagecorruptions` reference (Hendrycks & Dietterich 2019).

Compared in [0, 1] units as the mean absolute difference over the test images, after
truncating our output to uint8 as the reference's `np.uint8(...)` does. Where the reference
draws random numbers we either replay its numpy draws through our keyword arguments
(noise field, angle, crop, plasma map, displacement field) or, where that is impossible
(Poisson counts, skimage's own RNG, the sequential pixel-shuffle loop), compare with the
spread between two reference draws. Tolerances per corruption are in TOL with reasons.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foveal.robustness import corruptions as C
from foveal.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt

from .reference import load_reference

ic = load_reference()
needs_ref = pytest.mark.skipif(ic is None, reason="imagecorruptions (and its cv2/skimage) not installed")

# Mean abs diff allowed in [0, 1] units for corruptions compared draw-for-draw or deterministic.
TOL = {
    # same formula, float32 here vs float64 there: only uint8 truncation flips (1/255 = 0.0039) differ
    "gaussian_noise": 0.002, "brightness": 0.002, "contrast": 0.002, "fog": 0.002, "defocus_blur": 0.002,
    "zoom_blur": 0.002, "motion_blur": 0.002, "glass_blur": 0.002, "elastic_transform": 0.002, "pixelate": 0.002,
    # snow: the layer is rounded to uint8 inside the reference, so float32 vs float64 flips whole levels there
    "snow": 0.004,
    # frost: texture decoded by PIL instead of cv2 and bicubic-resized by torch instead of cv2 (fixed point)
    "frost": 0.006,
    # JPEG: float DCT and colour conversion here vs libjpeg's integer ones flip quantized coefficients
    "jpeg_compression": 0.012,
}
# Random by nature (Poisson counts, skimage's own generator): our result may be
# at most this factor of the distance between two reference draws (plus 0.004 for rounding) away.
STAT_FACTOR = {"shot_noise": 1.15, "impulse_noise": 1.15}  # glass blur is exact with replayed draws


def _images() -> list[np.ndarray]:
    """Four test images as uint8 HxWx3 or HxW: natural photos (skimage's bundled data) at 32-64 px."""
    from PIL import Image
    from skimage import data

    def small(a, h, w):
        return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))

    return [small(data.astronaut(), 48, 48), small(data.chelsea(), 32, 40), small(data.coffee(), 64, 56),
            small(data.camera(), 40, 40)]


IMAGES = _images() if ic is not None else []


def _ref(img: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    np.random.seed(seed)
    # impulse_noise goes through skimage's random_noise, which draws from its own generator, not
    # np.random's: seeded here too, or the reference's spread (and the test's bound) changes run to run
    import skimage.util

    sk_noise = skimage.util.random_noise
    skimage.util.random_noise = lambda *a, **k: sk_noise(*a, **{"rng": seed, **k})
    try:
        out = ic.corrupt(img, severity, name).astype(np.float32) / 255  # (H, W, 3)
    finally:
        skimage.util.random_noise = sk_noise
    if img.ndim == 2:  # gray goes through the reference as RGB (equal channels but for frost and noise draws)
        if name == "frost":  # coloured texture: our 1-channel frost is its luma
            return (out @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[None]
        return out[None, :, :, 0]  # one channel: one channel's own noise draws
    return out.transpose(2, 0, 1)


def _tensor(img: np.ndarray) -> torch.Tensor:
    a = img[..., None] if img.ndim == 2 else img
    return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)[None]


def _draws(name: str, img: np.ndarray, severity: int, seed: int) -> dict:
    """The reference's numpy draws for `seed`, replayed in its order, as our keyword arguments."""
    H, W = img.shape[:2]
    np.random.seed(seed)
    if name == "gaussian_noise":
        z = torch.from_numpy(np.random.normal(size=(H, W, 3))).float().permute(2, 0, 1)[None]
        return {"z": z[:, :1] if img.ndim == 2 else z}
    if name == "motion_blur":
        return {"angle": torch.tensor([np.random.uniform(-45, 45)])}
    if name == "snow":
        z = torch.from_numpy(np.random.normal(size=(H, W))).float()[None]
        return {"layer": z, "angle": torch.tensor([np.random.uniform(-135, -45)])}
    if name == "frost":
        i = np.random.randint(5)
        t = C._scaled_frost(H, W, "cpu")[i]
        r, c = np.random.randint(0, t.shape[1] - H), np.random.randint(0, t.shape[2] - W)
        return {"idx": torch.tensor([i]), "offsets": torch.tensor([[r, c]])}
    if name == "fog":
        decay = [2, 2, 1.7, 1.5, 1.4][severity - 1]
        M = 1 << (max(H, W, 3) - 1).bit_length()
        return {"plasma": torch.from_numpy(ic.corruptions.plasma_fractal(M, decay)).float()[None]}
    if name == "elastic_transform":
        m = H * 0.005
        dx, dy = np.random.uniform(-m, m, size=(H, W)), np.random.uniform(-m, m, size=(H, W))
        return {"uv": torch.from_numpy(np.stack([dx, dy]) / (2 * m) + 0.5).float()[None]}
    if name == "glass_blur":
        d, iters = [(1, 2), (2, 1), (2, 3), (3, 2), (4, 2)][severity - 1]
        shifts = []
        for _ in range(iters):  # the reference's loop order: rows then columns, both descending
            sh = np.zeros((2, H, W), dtype=np.int64)
            for h in range(H - d, d, -1):
                for w in range(W - d, d, -1):
                    dx, dy = np.random.randint(-d, d, size=(2,))
                    sh[:, h, w] = dy, dx
            shifts.append(torch.from_numpy(sh)[None])
        return {"shifts": shifts}
    return {}


def _ours(img: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    x = _tensor(img)
    kw = _draws(name, img, severity, seed) if seed < 100 else {}  # seeds >= 100: our own draws
    out = C.FUNCTIONS[name](x, severity, torch.Generator().manual_seed(seed), **kw)
    return (torch.floor(out * 255 + 1e-4) / 255)[0].numpy()  # np.uint8 truncation, as the reference


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@needs_ref
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n in TOL])
def test_matches_reference(name: str, severity: int) -> None:
    diffs = []
    for k, img in enumerate(IMAGES):
        diffs.append(_mad(_ours(img, name, severity, k), _ref(img, name, severity, k)))
    assert max(diffs) <= TOL[name], f"{name} s{severity}: mean abs diff per image {diffs} > {TOL[name]}"


@needs_ref
@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", list(STAT_FACTOR) + ["gaussian_noise"])
def test_random_corruptions_match_reference_spread(name: str, severity: int) -> None:
    for k, img in enumerate(IMAGES):
        ref1, ref2 = _ref(img, name, severity, 100 + k), _ref(img, name, severity, 200 + k)
        ours = _ours(img, name, severity, 300 + k)
        spread = _mad(ref1, ref2)
        assert _mad(ours, ref1) <= STAT_FACTOR.get(name, 1.15) * spread + 0.004, (name, severity, k)
        assert abs(ours.mean() - ref1.mean()) <= 0.2 * spread + 0.006, (name, severity, k)  # same mean level
        clean = _tensor(img)[0].numpy()
        assert abs(np.abs(ours - clean).mean() - np.abs(ref1 - clean).mean()) <= 0.2 * spread + 0.006


def test_shapes_devices_and_range() -> None:
    """Every corruption keeps shape and [0, 1] range for gray and RGB, odd sizes, and changes the image."""
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 3, 33, 47), (2, 1, 36, 36)]:
        x = torch.rand(shape, generator=g) * 0.8 + 0.1
        for name in CORRUPTIONS:
            y = corrupt(x, name, 3, torch.Generator().manual_seed(1))
            assert y.shape == x.shape and y.dtype == x.dtype, name
            assert float(y.min()) >= 0 and float(y.max()) <= 1, name
            assert float((y - x).abs().mean()) > 0.005, name


def _damage(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean abs change plus loss of correlation (frost darkens as it covers, so change alone can tie)."""
    corr = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
    return float((y - x).abs().mean()) + float(1 - corr)


def test_severity_orders_damage() -> None:
    """Severity 5 damages an image more than severity 1, for every corruption."""
    x = _tensor(IMAGES[0]) if IMAGES else torch.rand(1, 3, 48, 48)
    for name in CORRUPTIONS:
        d = [_damage(x, corrupt(x, name, s, torch.Generator().manual_seed(0))) for s in (1, 5)]
        assert d[1] > d[0], (name, d)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(torch.rand(1, 3, 32, 32), "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(torch.rand(1, 3, 32, 32), "fog", 6)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        corrupt(torch.rand(1, 2, 32, 32), "fog", 1)
