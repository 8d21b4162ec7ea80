"""Batched augmentation on the training device: no per-image Python in the step.

Each op draws its random parameters for the whole batch first (`make_params`) and then
applies a pure tensor kernel (`apply`), as torchvision's transforms v2 do; all randomness
comes from one `torch.Generator`, so an epoch's augmentation is reproducible from its seed.
Images are float (B, C, H, W) in [0, 1]; labels are (B,) int64 or (B, K) soft targets.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..registry import Registry

AUGMENTS: Registry[type] = Registry("augmentation")


class BatchOp:
    """One augmentation: `make_params` draws randomness, `apply` is a pure kernel.

    `pixel_exact` ops only move pixels or fill zeros (flips, pad-crop): they give the same result on
    uint8 and on [0, 1] floats, so the loaders run them on uint8 batches (a quarter of the memory
    traffic) and convert afterwards. `make_params` must not depend on the dtype.
    """

    pixel_exact = False
    batch_axis = 0  # the axis of the per-sample dimension in this op's parameter tensors

    def __init__(self, cfg: DataConfig, num_classes: int):
        self.cfg = cfg
        self.num_classes = num_classes

    def make_params(self, x: torch.Tensor, g: torch.Generator) -> Any:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                 draw: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment the batch. `draw` (a `foveal.data.loader.GlobalRows`) places it in a larger
        global batch: parameters are drawn for all of that batch's rows and this batch's rows kept."""
        if draw is None:
            return self.apply(x, y, self.make_params(x, g))
        full = self.make_params(_Like((draw.size, *x.shape[1:]), x.device, x.dtype), g)
        return self.apply(x, y, _take(full, draw.rows, self.batch_axis))


class _Like:
    """Shape, device and dtype of a batch that is not materialized: what `make_params` reads."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype):
        self.shape, self.device, self.dtype = torch.Size(shape), device, dtype


def _take(params: Any, rows: torch.Tensor, axis: int) -> Any:
    """The `rows` of every tensor in `params` (nested tuples) along the per-sample `axis`."""
    if isinstance(params, torch.Tensor):
        return params.index_select(axis if params.dim() > axis else 0, rows)
    if isinstance(params, (tuple, list)):
        return type(params)(_take(p, rows, axis) for p in params)
    return params  # plain numbers (e.g. the crop padding)


def _rand(shape: tuple[int, ...], x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=x.device)


@AUGMENTS.register("flip")
class HFlip(BatchOp):
    """Horizontal flip of half the batch."""

    pixel_exact = True

    def make_params(self, x, g):
        return _rand((x.shape[0],), x, g) < 0.5  # (B,) bool

    def apply(self, x, y, flip):
        return torch.where(flip[:, None, None, None], x.flip(3), x), y


@AUGMENTS.register("vflip")
class VFlip(HFlip):
    """Vertical flip of half the batch (aerial, microscopy and medical images)."""

    def apply(self, x, y, flip):
        return torch.where(flip[:, None, None, None], x.flip(2), x), y


@AUGMENTS.register("crop")
class PadCrop(BatchOp):
    """Zero-pad by `data.pad` px per 32 px of input, then crop back at a random offset."""

    pixel_exact = True
    batch_axis = 1  # offsets are (2, B)

    def make_params(self, x, g):
        p = max(1, round(self.cfg.pad * x.shape[-1] / 32))
        off = (_rand((2, x.shape[0]), x, g) * (2 * p + 1)).long()  # (2, B) in [0, 2p]
        return p, off

    def apply(self, x, y, params):
        p, off = params
        return crop_shift(x, p, off), y


def crop_shift(x: torch.Tensor, pad: int, off: torch.Tensor, mode: str = "constant") -> torch.Tensor:
    """Each image of (B, C, H, W) `x` padded by `pad` px per side and cropped back at its own offset: a shift by
    up to `pad` px each way. `off` (2, B): (row, column) offsets in [0, 2 pad]; `mode`: F.pad's, 'constant'
    (zeros: the 'crop' augmentation) or 'reflect' (the fast recipe's and the label check's translate).

    One advanced-indexing gather of C-vectors: index tensors of B*H*W entries, not B*C*H*W as a flat
    `gather` needs (measured on the CPU: as fast at 1 channel, 2x faster for 3-channel 224 px uint8 batches).
    The result is NCHW-contiguous; at 1 channel its strides are channels-last's too ((H*W, 1, W, 1)), which
    the CPU convolution takes as channels-last, with another algorithm and other rounding than for the
    standard (H*W, H*W, W, 1). 'crop' has always handed its batches on so; `translate` gives standard strides."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    rows = (off[0][:, None] + torch.arange(H, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (off[1][:, None] + torch.arange(W, device=x.device))[:, None, :]  # (B, 1, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def translate(x: torch.Tensor, pad: int, g: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    """Shift each image of (B, C, H, W) by a uniform offset in [-pad, pad]^2 (`crop_shift`, reflect-padded by
    default): the fast recipe's and the label check's shift, its offsets drawn with `randint` from `g`."""
    off = torch.randint(0, 2 * pad + 1, (2, x.shape[0]), generator=g, device=x.device)  # (2, B)
    out = crop_shift(x, pad, off, mode)
    return out.reshape(len(out), -1).view(out.shape)  # NCHW strides, no copy (see crop_shift)


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp a batch by (B, 2, 3) affine matrices in normalized coordinates; outside is 0."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTS.register("rotate")
class Rotate(BatchOp):
    """Rotation by a uniform angle in [-data.rotate, +data.rotate] degrees."""

    def make_params(self, x, g):
        return (_rand((x.shape[0],), x, g) * 2 - 1) * math.radians(self.cfg.rotate)  # (B,) radians

    def apply(self, x, y, angle):
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
        return affine(x, theta.to(x.dtype)), y


@AUGMENTS.register("noise")
class GaussianNoise(BatchOp):
    """Additive Gaussian noise of std `data.noise_std` (pixel units in [0, 1]), clamped."""

    def make_params(self, x, g):
        return torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * self.cfg.noise_std

    def apply(self, x, y, noise):
        return (x + noise).clamp_(0, 1), y


class Compose:
    """Apply named ops in order; an empty list is the identity."""

    def __init__(self, names: Optional[list[str]], cfg: DataConfig, num_classes: int):
        self.ops = [AUGMENTS.get(n)(cfg, num_classes) for n in names or ()]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                 draw: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        for op in self.ops:
            x, y = op(x, y, g, draw)
        return x, y

    def __bool__(self) -> bool:
        return bool(self.ops)

    @property
    def pixel_exact(self) -> bool:
        """Every op may run on uint8 (see `BatchOp.pixel_exact`)."""
        return all(op.pixel_exact for op in self.ops)


# ---- random-resized-crop, colour jitter, random erasing ---------------------------------------


@AUGMENTS.register("rrc")
class RandomResizedCrop(BatchOp):
    """Crop a random box (area in [data.rrc_scale, 1] of the image, aspect in [3/4, 4/3]) and resize it back.

    One `affine_grid` + `grid_sample` for the whole batch: per-sample scale and offset are the
    diagonal and translation of a (B, 2, 3) matrix, so no image is cropped in a Python loop.
    """

    def make_params(self, x, g):
        B = x.shape[0]
        area = self.cfg.rrc_scale + (1 - self.cfg.rrc_scale) * _rand((B,), x, g)  # (B,) fraction of the image
        log_r = (_rand((B,), x, g) * 2 - 1) * math.log(4 / 3)  # (B,) log aspect ratio w/h
        sw = (area * log_r.exp()).sqrt()  # (B,) box width / image width
        sh = (area / log_r.exp()).sqrt()
        fits = (sw <= 1) & (sh <= 1)  # else the whole image, torchvision's fallback
        sw, sh = torch.where(fits, sw, 1.0), torch.where(fits, sh, 1.0)
        cx = (_rand((B,), x, g) * 2 - 1) * (1 - sw)  # (B,) box centre in normalized coords
        cy = (_rand((B,), x, g) * 2 - 1) * (1 - sh)
        return sw, sh, cx, cy

    def apply(self, x, y, params):
        sw, sh, cx, cy = params
        zero = torch.zeros_like(sw)
        theta = torch.stack([torch.stack([sw, zero, cx], 1), torch.stack([zero, sh, cy], 1)], 1)  # (B, 2, 3)
        return affine(x, theta.to(x.dtype)), y


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma (ITU-R 601 weights, as PIL and torchvision); 1-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x[:, :3] * w).sum(1, keepdim=True)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: other + factor * (x - other), per-sample factor (B,), clamped to [0, 1]."""
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return blend(x, torch.zeros_like(x), f)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return blend(x, grayscale(x).mean((1, 2, 3), keepdim=True).expand_as(x), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image; the identity on 1-channel images (nothing to saturate)."""
    return x if x.shape[1] == 1 else blend(x, grayscale(x).expand_as(x), f)


@AUGMENTS.register("jitter")
class ColorJitter(BatchOp):
    """Brightness, contrast and saturation factors each uniform in [1 - data.jitter, 1 + data.jitter].

    Saturation is skipped on grayscale images, so the op is safe on MNIST-like data.
    """

    batch_axis = 1  # factors are (3, B)

    def make_params(self, x, g):
        j = self.cfg.jitter
        return 1 + (_rand((3, x.shape[0]), x, g) * 2 - 1) * j  # (3, B) factors

    def apply(self, x, y, f):
        return adjust_saturation(adjust_contrast(adjust_brightness(x, f[0]), f[1]), f[2]), y


@AUGMENTS.register("erase")
class RandomErasing(BatchOp):
    """Random erasing / cutout (Zhong et al. 2020): with prob. data.erase_p, one rectangle of area
    2-33% of the image and aspect in [0.3, 3.3] is filled with uniform noise (an occluder)."""

    def make_params(self, x, g):
        B, _, H, W = x.shape
        on = _rand((B,), x, g) < self.cfg.erase_p  # (B,) bool
        area = (0.02 + 0.31 * _rand((B,), x, g)) * H * W  # (B,) px^2
        log_r = math.log(0.3) + (math.log(3.3) - math.log(0.3)) * _rand((B,), x, g)
        h = (area * log_r.exp()).sqrt().clamp(1, H)  # (B,) px
        w = (area / log_r.exp()).sqrt().clamp(1, W)
        y0 = _rand((B,), x, g) * (H - h)  # (B,) px, box fully inside
        x0 = _rand((B,), x, g) * (W - w)
        fill = torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return on, y0, x0, h, w, fill

    def apply(self, x, y, params):
        on, y0, x0, h, w, fill = params
        rows = torch.arange(x.shape[2], device=x.device, dtype=y0.dtype)[None, :, None]  # (1, H, 1)
        cols = torch.arange(x.shape[3], device=x.device, dtype=x0.dtype)[None, None, :]  # (1, 1, W)
        v = lambda t: t[:, None, None]  # noqa: E731  (B,) -> (B, 1, 1)
        box = (rows >= v(y0)) & (rows < v(y0 + h)) & (cols >= v(x0)) & (cols < v(x0 + w)) & v(on)  # (B, H, W)
        return torch.where(box[:, None], fill, x), y


# ---- RandAugment and TrivialAugment: one op per sample, applied through masks -----------------

# The op list of RandAugment (Cubuk et al. 2020) and TrivialAugment (Mueller & Hutter 2021), as torchvision.
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color", "contrast",
       "sharpness", "posterize", "solarize", "autocontrast", "equalize")
_GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
# Magnitude ranges at the top of the scale: RandAugment's, and TrivialAugment's "wide" ones.
# shear: factor; translate: fraction of the side; rotate: degrees; enhance: |factor - 1|;
# posterize: bits removed; solarize: 1 - threshold.
RA_RANGES = dict(shear=0.3, translate=150 / 331, rotate=30.0, enhance=0.9, posterize=4.0, solarize=1.0)
TA_RANGES = dict(shear=0.99, translate=1.0, rotate=135.0, enhance=0.99, posterize=6.0, solarize=1.0)


def _geometric(x: torch.Tensor, op: torch.Tensor, m: torch.Tensor, r: dict[str, float]) -> torch.Tensor:
    """Shear / translate / rotate of each sample whose `op` is geometric, in one grid_sample; m (B,) signed."""
    k = {name: (op == OPS.index(name)).to(x.dtype) for name in _GEOMETRIC}  # (B,) 0/1 masks
    a = m * math.radians(r["rotate"]) * k["rotate"]
    shx, shy = m * r["shear"] * k["shear_x"], m * r["shear"] * k["shear_y"]
    tx, ty = 2 * m * r["translate"] * k["translate_x"], 2 * m * r["translate"] * k["translate_y"]  # normalized
    cos, sin = a.cos(), a.sin()
    theta = torch.stack([torch.stack([cos, -sin + shx, tx], 1), torch.stack([sin + shy, cos, ty], 1)], 1)  # (B,2,3)
    geo = sum(k.values()).bool()[:, None, None, None]
    return torch.where(geo, affine(x, theta), x)


def sharpen(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """PIL's SHARPNESS: blend with a 3x3 smoothed image (border pixels kept), per-sample factor (B,)."""
    C = x.shape[1]
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
    blur = F.conv2d(x, k.expand(C, 1, 3, 3), groups=C, padding=1)
    blur[..., 0, :], blur[..., -1, :], blur[..., :, 0], blur[..., :, -1] = (
        x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1])
    return blend(x, blur, f)


def posterize(x: torch.Tensor, bits_removed: torch.Tensor) -> torch.Tensor:
    """Keep 8 - bits_removed (B,) high bits of each 8-bit pixel value."""
    q = (2.0 ** bits_removed.round()).view(-1, 1, 1, 1)
    return torch.floor((x * 255).round() / q) * q / 255


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each image channel to [0, 1]; flat channels are kept."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    flat = hi <= lo
    return torch.where(flat, x, (x - lo) / torch.where(flat, torch.ones_like(hi), hi - lo))


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalization of each image channel, batched (PIL's / torchvision's algorithm).

    Written by hand because torchvision's tensor `equalize` loops over images in Python.
    """
    B, C, H, W = x.shape
    v = (x * 255).round().long().clamp(0, 255).view(B * C, H * W)  # (BC, HW) 8-bit values
    hist = torch.zeros(B * C, 256, device=x.device, dtype=torch.long).scatter_add_(1, v, torch.ones_like(v))
    last = hist.gather(1, v.amax(1, keepdim=True))  # (BC, 1) count of the top value
    step = (H * W - last) // 255
    safe = step.clamp_min(1)
    lut = (hist.cumsum(1) + safe // 2) // safe
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)  # (BC, 256)
    out = lut.gather(1, v).to(x.dtype) / 255
    return torch.where(step == 0, v.to(x.dtype) / 255, out).view(B, C, H, W)


def apply_op(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor,
             r: dict[str, float]) -> torch.Tensor:
    """Apply op `OPS[op[i]]` at magnitude mag[i] in [0, 1] (sign[i] = +-1) to each sample i.

    Every colour op is computed on the whole batch and picked per sample with `torch.where`:
    for small images this costs a few elementwise passes and never syncs with the host to
    split the batch. Magnitude 0 is the identity for every op but autocontrast and equalize.
    """
    m = mag * sign  # (B,) signed
    out = _geometric(x, op, m, r)
    enh = 1 + m * r["enhance"]  # (B,) factor
    colour = {"brightness": lambda: adjust_brightness(x, enh), "color": lambda: adjust_saturation(x, enh),
              "contrast": lambda: adjust_contrast(x, enh), "sharpness": lambda: sharpen(x, enh),
              "posterize": lambda: posterize(x, mag * r["posterize"]),
              "solarize": lambda: torch.where(x > (1 - mag * r["solarize"]).view(-1, 1, 1, 1), 1 - x, x),
              "autocontrast": lambda: autocontrast(x), "equalize": lambda: equalize(x)}
    for name, fn in colour.items():
        out = torch.where((op == OPS.index(name)).view(-1, 1, 1, 1), fn(), out)
    return out


def _signs(shape: tuple[int, ...], x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.where(_rand(shape, x, g) < 0.5, -1.0, 1.0).to(x.dtype)  # random +-1


@AUGMENTS.register("randaugment")
class RandAugment(BatchOp):
    """RandAugment (Cubuk et al. 2020): data.randaug_n ops per image, each uniform over `OPS`,
    all at magnitude data.randaug_m on the 0-30 scale; ops and signs are drawn per sample."""

    batch_axis = 1  # parameters are (N ops, B)

    def make_params(self, x, g):
        n, B = self.cfg.randaug_n, x.shape[0]
        op = (_rand((n, B), x, g) * len(OPS)).long()  # (N, B)
        mag = torch.full((n, B), self.cfg.randaug_m / 30, device=x.device, dtype=x.dtype)
        return op, mag, _signs((n, B), x, g)

    def apply(self, x, y, params):
        for op, mag, sign in zip(*params):
            x = apply_op(x, op, mag, sign, RA_RANGES)
        return x, y


@AUGMENTS.register("trivialaugment")
class TrivialAugment(BatchOp):
    """TrivialAugment Wide (Mueller & Hutter 2021): one op per image, uniform over `OPS`, at a
    magnitude uniform over the 31 bins of the wide ranges; nothing to tune."""

    def make_params(self, x, g):
        B = x.shape[0]
        op = (_rand((B,), x, g) * len(OPS)).long()  # (B,)
        mag = (_rand((B,), x, g) * 31).floor() / 30  # (B,) in {0, 1/30, ..., 1}
        return op, mag.to(x.dtype), _signs((B,), x, g)

    def apply(self, x, y, params):
        return apply_op(x, *params, TA_RANGES), y


# ---- mixup and cutmix: applied in the train step, after normalization ---------------------------


class MixBatch:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of each batch with its reverse.

    Targets become soft (B, K) rows summing to 1; a metric that takes their argmax counts the
    dominant label. One lam ~ Beta(alpha, alpha) per batch, drawn on the host from a generator
    seeded by (seed, epoch), so resumed runs repeat it and no device sync is needed. With both
    alphas set, each batch picks one of the two with probability 1/2 (as timm does).
    """

    def __init__(self, mixup: float, cutmix: float, num_classes: int, seed: int = 0):
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"data.mixup ({mixup}) and data.cutmix ({cutmix}) are Beta alphas: use 0 or more")
        self.mixup, self.cutmix, self.num_classes, self.seed = mixup, cutmix, num_classes, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.rng = np.random.default_rng([self.seed, epoch, 2])

    def __bool__(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.one_hot(y, self.num_classes).to(x.dtype) if y.ndim == 1 else y  # (B, K)
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or self.rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(self.rng.beta(alpha, alpha))
        if use_cutmix:
            x, lam = self._paste_box(x, lam)
        else:
            x = x * lam + x.flip(0) * (1 - lam)
        return x, t * lam + t.flip(0) * (1 - lam)

    def _paste_box(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """Paste a box of area (1 - lam) from the partner image; lam is corrected for clipping."""
        H, W = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        cy, cx = self.rng.integers(H), self.rng.integers(W)
        y0, y1 = int(np.clip(cy - cut * H / 2, 0, H)), int(np.clip(cy + cut * H / 2, 0, H))
        x0, x1 = int(np.clip(cx - cut * W / 2, 0, W)), int(np.clip(cx + cut * W / 2, 0, W))
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        return x, 1 - (y1 - y0) * (x1 - x0) / (H * W)
