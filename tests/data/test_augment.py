"""Batched augmentations: shapes, determinism, that each op acts, identities at magnitude 0, statistics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from foveal.config import DataConfig
from foveal.data.augment import AUGMENTS, OPS, RA_RANGES, TA_RANGES, Compose, MixBatch, apply_op, equalize
from tests.conftest import digits_arrays

NAMES = ["flip", "vflip", "crop", "rotate", "noise", "rrc", "jitter", "erase", "randaugment", "trivialaugment"]


def _batch(channels: int = 3, n: int = 16, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digit images (uint8 grid values in [0, 1]), tinted per channel so colour ops have work to do."""
    x, y = digits_arrays()
    img = torch.from_numpy(x[:n]).float().div(255)[:, None]  # (n, 1, 8, 8)
    img = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)
    img = (img * 255).round() / 255
    tint = torch.linspace(1.0, 0.6, channels).view(1, channels, 1, 1)
    return ((img * tint) * 255).round() / 255, torch.from_numpy(y[:n]).long()


def _op(name: str, **cfg) -> object:
    return AUGMENTS.get(name)(dataclasses.replace(DataConfig(), **cfg), 10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_range_and_determinism(name: str, channels: int) -> None:
    x, y = _batch(channels)
    op = _op(name, erase_p=1.0)
    a, ya = op(x, y, torch.Generator().manual_seed(3))
    b, _ = op(x, y, torch.Generator().manual_seed(3))
    c, _ = op(x, y, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(ya, y)
    assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b), "same seed, same augmentation"
    assert not torch.equal(a, c), "another seed, another augmentation"
    assert not torch.equal(a, x), f"'{name}' left the batch unchanged"


def test_flip_fraction_is_one_half() -> None:
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(4000, 1, 1, 4).contiguous()
    out, _ = _op("flip")(x, torch.zeros(4000, dtype=torch.long), torch.Generator().manual_seed(0))
    frac = (out[:, 0, 0, 0] == 3).float().mean().item()
    assert abs(frac - 0.5) < 0.03


def test_erase_probability_and_area() -> None:
    x = torch.zeros(2000, 1, 32, 32)
    out, _ = _op("erase", erase_p=0.3)(x, torch.zeros(2000, dtype=torch.long), torch.Generator().manual_seed(0))
    changed = (out != 0).flatten(1).any(1).float()
    assert abs(changed.mean().item() - 0.3) < 0.04
    area = (out != 0).flatten(1).float().mean(1)[changed.bool()]  # fraction of the image erased
    assert 0.0 < area.min() and area.max() <= 0.4 and 0.1 < area.mean() < 0.25


@pytest.mark.parametrize("cfg", [dict(erase_p=0.0), dict(jitter=0.0), dict(rotate=0.0), dict(rrc_scale=1.0),
                                 dict(randaug_n=0), dict(noise_std=0.0)])
def test_identity_at_zero_strength(cfg: dict) -> None:
    name = {"erase_p": "erase", "jitter": "jitter", "rotate": "rotate", "rrc_scale": "rrc", "randaug_n": "randaugment",
            "noise_std": "noise"}[next(iter(cfg))]
    x, y = _batch(3)
    out, _ = _op(name, **cfg)(x, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("op", [o for o in OPS if o not in ("autocontrast", "equalize")])
@pytest.mark.parametrize("ranges", [RA_RANGES, TA_RANGES])
def test_each_op_identity_at_magnitude_zero_and_acts_at_full(op: str, ranges: dict) -> None:
    x, _ = _batch(3, n=8)
    k = torch.full((8,), OPS.index(op))
    ones = torch.ones(8)
    torch.testing.assert_close(apply_op(x, k, torch.zeros(8), ones, ranges), x, atol=1e-5, rtol=0)
    if op != "identity":
        assert (apply_op(x, k, ones, ones, ranges) - x).abs().mean() > 1e-3, op


def test_ops_apply_per_sample() -> None:
    """Each sample gets its own op: a batch of mixed ops equals the ops applied one by one."""
    x, _ = _batch(3, n=len(OPS))
    k = torch.arange(len(OPS))
    mag, sign = torch.full((len(OPS),), 0.5), torch.ones(len(OPS))
    mixed = apply_op(x, k, mag, sign, RA_RANGES)
    for i in range(len(OPS)):
        alone = apply_op(x[i:i + 1], k[i:i + 1], mag[:1], sign[:1], RA_RANGES)
        torch.testing.assert_close(mixed[i:i + 1], alone, atol=1e-5, rtol=0)


def test_equalize_matches_torchvision() -> None:
    from torchvision.transforms.v2 import functional as TF

    x, _ = _batch(3, n=6)
    x[0] = 0.5  # a flat image is kept as is
    ref = torch.stack([TF.equalize((xi * 255).round().to(torch.uint8)) for xi in x]).float() / 255
    torch.testing.assert_close(equalize(x), ref, atol=1 / 255 + 1e-6, rtol=0)


def test_jitter_is_grayscale_safe() -> None:
    x, y = _batch(1)
    out, _ = _op("jitter", jitter=0.5)(x, y, torch.Generator().manual_seed(0))
    assert out.shape[1] == 1 and not torch.equal(out, x)


def test_randaugment_op_choice_is_uniform() -> None:
    op = _op("randaugment", randaug_n=2)
    x = torch.zeros(7000, 1, 4, 4)
    ops, mag, sign = op.make_params(x, torch.Generator().manual_seed(0))
    counts = torch.bincount(ops.flatten(), minlength=len(OPS)).float() / ops.numel()
    assert ops.shape == (2, 7000) and (counts - 1 / len(OPS)).abs().max() < 0.01
    assert torch.allclose(mag, torch.full_like(mag, 9 / 30)) and set(sign.unique().tolist()) == {-1.0, 1.0}


def test_compose_runs_in_order_and_empty_is_identity() -> None:
    """Compose(names) is the ops applied one after the other in the order named, drawing from one
    generator; rotate and crop do not commute, so the reverse order gives other images."""
    x, y = _batch(3)
    cfg = DataConfig()
    empty = Compose([], cfg, 10)
    assert not empty and torch.equal(empty(x, y, torch.Generator().manual_seed(0))[0], x)
    names = ["rotate", "crop"]
    out, _ = Compose(names, cfg, 10)(x, y, torch.Generator().manual_seed(0))

    def one_by_one(order: list[str]) -> torch.Tensor:
        g, z = torch.Generator().manual_seed(0), x
        for name in order:
            z, _ = _op(name)(z, y, g)
        return z

    assert torch.equal(out, one_by_one(names))
    assert not torch.equal(out, one_by_one(names[::-1]))


@pytest.mark.parametrize("mixup,cutmix", [(0.2, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_mix_targets_are_soft_and_sum_to_one(mixup: float, cutmix: float) -> None:
    x, y = _batch(3, n=32)
    mix = MixBatch(mixup, cutmix, 10, seed=0)
    mix.set_epoch(1)
    xm, t = mix(x, y)
    assert xm.shape == x.shape and t.shape == (32, 10)
    torch.testing.assert_close(t.sum(1), torch.ones(32))
    lam = t[torch.arange(32), y].min().item() if (y != y.flip(0)).all() else None
    assert lam is None or 0 <= lam <= 1
    # the pixels are the same mix of the pair as the targets say (mixup), or a pasted box (cutmix)
    lam_i = t[0, y[0]].item() if y[0] != y[-1] else None
    if lam_i is not None and cutmix == 0:
        torch.testing.assert_close(xm[0], lam_i * x[0] + (1 - lam_i) * x[-1])
    if cutmix > 0 and mixup == 0 and lam_i is not None:
        from_self = (xm[0] == x[0]).all(0).float().mean().item()
        assert abs(from_self - lam_i) < 0.05 or torch.equal(x[0], x[-1])
    mix.set_epoch(1)
    xm2, t2 = mix(x, y)
    assert torch.equal(xm, xm2) and torch.equal(t, t2), "same (seed, epoch), same mix"


def test_mix_rejects_negative_alpha() -> None:
    with pytest.raises(ValueError, match="data.mixup"):
        MixBatch(-1.0, 0.0, 10)


@pytest.mark.parametrize("names", [["flip", "crop"], ["vflip"], [], ["flip", "rotate"], ["jitter"]])
def test_normalizer_uint8_path_matches_the_float_path(names: list[str]) -> None:
    """Pixel-exact ops run on uint8 then one fused conversion; the result equals augmenting [0, 1]
    floats and normalizing afterwards (the only path for the other ops)."""
    from foveal.data.loader import Normalizer

    x, y = _batch(3, n=32)
    u8 = (x * 255).round().to(torch.uint8)
    cfg = dataclasses.replace(DataConfig(), pad=4)
    aug = Compose(names, cfg, 10)
    assert aug.pixel_exact == all(n in ("flip", "vflip", "crop") for n in names)
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.25, 0.2]
    got, gy = Normalizer(mean, std, aug, torch.device("cpu"))(u8, y, torch.Generator().manual_seed(3))
    ref, ry = aug(u8.float() / 255, y, torch.Generator().manual_seed(3)) if aug else (u8.float() / 255, y)
    ref = (ref - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert got.dtype == torch.float32 and torch.equal(gy, ry)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_eval_input_matches_the_training_input() -> None:
    """`normalize_u8` (prediction, export, reports) gives what the training loader's Normalizer
    gives without augmentation, and per-channel lists or (1, C, 1, 1) tensors give the same floats."""
    from foveal.data.loader import Normalizer
    from foveal.data.preprocess import normalize_u8

    u8 = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.25, 0.2]
    got = normalize_u8(u8, mean, std)
    train, _ = Normalizer(mean, std, None, torch.device("cpu"))(u8, torch.zeros(8), torch.Generator())
    assert got.dtype == torch.float32 and got.shape == u8.shape
    torch.testing.assert_close(got, train, rtol=0, atol=1e-5)
    as_tensors = normalize_u8(u8, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
    assert torch.equal(got, as_tensors)
    torch.testing.assert_close(got[0, 1, 0, 0].item(), (u8[0, 1, 0, 0].item() / 255 - 0.3) / 0.25, rtol=0, atol=1e-6)


# ---- parameter ranges, kernels against torchvision, the global-batch draw, mix ---------------------------------

from torchvision.transforms.v2 import functional as TF  # noqa: E402

from foveal.data import augment as AU  # noqa: E402


def _params(name: str, n: int = 20000, shape=(1, 8, 8), seed: int = 0, **cfg):
    op = _op(name, **cfg)
    return op.make_params(torch.zeros(n, *shape), torch.Generator().manual_seed(seed))


def _spans(v: torch.Tensor, lo: float, hi: float, slack: float = 0.02) -> bool:
    """All of v in [lo, hi] and both ends approached (a uniform draw fills its interval)."""
    d = (hi - lo) * slack
    return bool(v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6 and v.min() < lo + d and v.max() > hi - d)


def test_flip_rotate_noise_jitter_parameter_ranges() -> None:
    flip = _params("flip")
    assert flip.dtype == torch.bool and flip.shape == (20000,) and abs(flip.float().mean() - 0.5) < 0.02
    ang = _params("rotate", rotate=20.0)
    assert ang.shape == (20000,) and _spans(ang, -math.radians(20), math.radians(20)) and abs(ang.mean()) < 0.01
    f = _params("jitter", jitter=0.4)
    assert f.shape == (3, 20000) and all(_spans(f[i], 0.6, 1.4) for i in range(3)) and abs(f.mean() - 1) < 0.01
    noise = _op("noise", noise_std=0.2).make_params(torch.zeros(200, 1, 8, 8, dtype=torch.float64),
                                                     torch.Generator().manual_seed(0))
    assert noise.dtype == torch.float64 and abs(noise.std().item() - 0.2) < 0.005 and abs(noise.mean()) < 0.005
    x = torch.full((2, 1, 2, 2), 0.5)
    n = torch.tensor([0.2, -0.7, 0.6, 0.1]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    assert torch.equal(_op("noise").apply(x.clone(), None, n)[0], (x + n).clamp(0, 1))


def test_vflip_flips_rows_and_flip_flips_columns() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4).expand(2, 1, 3, 4)
    on = torch.tensor([True, False])
    out, _ = _op("vflip").apply(x, None, on)
    assert torch.equal(out[0], x[0].flip(1)) and torch.equal(out[1], x[1])
    out, _ = _op("flip").apply(x, None, on)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])


@pytest.mark.parametrize("pad,size,p", [(4, 32, 4), (4, 16, 2), (4, 8, 1), (1, 8, 1), (3, 64, 6), (4, 24, 3), (3, 80, 8)])
def test_pad_crop_padding_offsets_and_kernel(pad, size, p) -> None:
    got_p, off = _params("crop", n=4000, shape=(1, 2 * size, size), pad=pad)  # the width sets the padding
    assert got_p == p and off.shape == (2, 4000) and off.dtype == torch.int64
    assert set(off.flatten().tolist()) == set(range(2 * p + 1))  # every offset in [0, 2p]
    x = torch.rand(5, 2, size, size + 2, generator=torch.Generator().manual_seed(1))
    oy, ox = torch.tensor([0, 2 * p, p, 1, 0]), torch.tensor([2 * p, 0, p, 0, 1])
    out, _ = _op("crop").apply(x, None, (p, (oy, ox)))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    ref = torch.stack([padded[i, :, oy[i]:oy[i] + size, ox[i]:ox[i] + size + 2] for i in range(5)])
    assert torch.equal(out, ref)


def test_rrc_boxes_fit_and_keep_area_and_aspect() -> None:
    sw, sh, cx, cy = _params("rrc", rrc_scale=0.3)
    whole = (sw == 1) & (sh == 1)
    box = ~whole
    area, aspect = sw[box] * sh[box], sw[box] / sh[box]
    assert _spans(area, 0.3, 1.0, 0.05) and _spans(aspect.log(), -math.log(4 / 3), math.log(4 / 3), 0.05)
    assert 0 < whole.float().mean() < 0.2  # the fallback: boxes that would not fit give the whole image
    assert (cx.abs() <= 1 - sw + 1e-6).all() and (cy.abs() <= 1 - sh + 1e-6).all()
    far = (cx[box] / (1 - sw[box]).clamp_min(1e-6))
    assert _spans(far, -1, 1, 0.05) and _spans(cy[box] / (1 - sh[box]).clamp_min(1e-6), -1, 1, 0.05)
    # apply: a centred half-size box scales the centre of the image up by 2
    x = torch.arange(64.0).view(1, 1, 8, 8)
    half = torch.tensor([0.5])
    out, _ = _op("rrc").apply(x, None, (half, half, torch.zeros(1), torch.zeros(1)))
    ref = torch.nn.functional.interpolate(x[:, :, 2:6, 2:6], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[..., 1:7, 1:7], ref[..., 1:7, 1:7])  # the borders sample outside the box


def test_erase_parameters_and_box_edges() -> None:
    on, y0, x0, h, w, fill = _params("erase", n=20000, shape=(1, 10, 20), erase_p=0.4)
    assert abs(on.float().mean() - 0.4) < 0.02 and fill.shape == (20000, 1, 10, 20)
    assert _spans(fill.flatten()[:100000], 0, 1) and abs(fill.mean() - 0.5) < 0.01
    assert h.min() >= 1 and h.max() <= 10 and w.min() >= 1 and w.max() <= 20 and (h == 10).any()
    inside = (h > 1) & (h < 10) & (w > 1) & (w < 20)  # unclamped boxes: area and aspect as drawn
    assert _spans((h * w)[inside] / 200, 0.02, 0.33, 0.05) and _spans((h / w)[inside].log(), math.log(0.3),
                                                                      math.log(3.3), 0.05)
    assert (y0 >= 0).all() and (y0 + h <= 10 + 1e-4).all() and (x0 >= 0).all() and (x0 + w <= 20 + 1e-4).all()
    assert _spans(y0 / (10 - h).clamp_min(1e-6), 0, 1, 0.05)
    # the box covers rows [y0, y0 + h) and columns [x0, x0 + w), only where `on`
    x = torch.zeros(2, 1, 6, 6)
    one = torch.ones(2, 1, 6, 6)
    params = (torch.tensor([True, False]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0]), torch.tensor([3.0, 3.0]),
              torch.tensor([2.0, 2.0]), one)
    out, _ = _op("erase").apply(x, None, params)
    ref = torch.zeros(6, 6)
    ref[1:4, 2:4] = 1
    assert torch.equal(out[0, 0], ref) and torch.equal(out[1], x[1])
    h = _params("erase", n=2000, shape=(1, 2, 2))[3]
    assert h.min() == 1  # at least one pixel


def test_randaugment_and_trivialaugment_magnitudes() -> None:
    op, mag, sign = _op("trivialaugment").make_params(torch.zeros(31000, 1, 2, 2, dtype=torch.float64),
                                                      torch.Generator().manual_seed(0))
    counts = torch.bincount((mag * 30).round().long(), minlength=31)
    assert mag.dtype == torch.float64 and len(counts) == 31 and counts.min() > 850  # 31 bins 0, 1/30, ..., 1
    assert torch.allclose(mag * 30, (mag * 30).round()) and mag.max() == 1.0
    assert set(op.unique().tolist()) == set(range(len(OPS))) and set(sign.unique().tolist()) == {-1.0, 1.0}
    assert abs((sign == 1).double().mean() - 0.5) < 0.02
    _, mag, _ = _op("randaugment", randaug_m=15).make_params(torch.zeros(4, 1, 2, 2, dtype=torch.float64),
                                                             torch.Generator())
    assert mag.dtype == torch.float64 and torch.equal(mag, torch.full((2, 4), 0.5, dtype=torch.float64))


def test_colour_kernels_equal_torchvision() -> None:
    x, _ = _batch(3, n=6)
    f = torch.tensor([0.3, 0.7, 1.0, 1.4, 1.9, 0.0])
    for ours, ref in ((AU.adjust_brightness, TF.adjust_brightness), (AU.adjust_contrast, TF.adjust_contrast),
                      (AU.adjust_saturation, TF.adjust_saturation), (AU.sharpen, TF.adjust_sharpness)):
        want = torch.stack([ref(x[i], f[i].item()) for i in range(6)])
        torch.testing.assert_close(ours(x, f), want, atol=2e-3, rtol=0)  # luma 0.299 here, 0.2989 there
    torch.testing.assert_close(AU.grayscale(x), TF.rgb_to_grayscale(x), atol=2e-3, rtol=0)
    gray = x[:, :1]
    assert AU.grayscale(gray) is gray and AU.adjust_saturation(gray, f) is gray
    torch.testing.assert_close(AU.adjust_contrast(gray, f), torch.stack([TF.adjust_contrast(gray[i], f[i].item())
                                                                         for i in range(6)]), atol=1e-5, rtol=0)
    u8 = (x * 255).round().to(torch.uint8)
    for bits in (1, 3, 4):
        want = TF.posterize(u8, 8 - bits).float() / 255
        torch.testing.assert_close(AU.posterize(x, torch.full((6,), float(bits))), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(AU.autocontrast(x), TF.autocontrast(x), atol=1e-6, rtol=0)
    flat = torch.full((1, 1, 3, 3), 0.4)
    assert torch.equal(AU.autocontrast(flat), flat)
    k = torch.full((6,), OPS.index("solarize"))
    # thresholds off the 8-bit grid: at a pixel equal to the threshold PIL and torchvision invert (>=), this op
    # keeps it (>), which makes magnitude 0 (threshold 1) the identity on white pixels
    mag = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9, 0.6])
    got = apply_op(x, k, mag, torch.ones(6), RA_RANGES)
    want = torch.stack([TF.solarize(x[i], 1 - mag[i].item()) for i in range(6)])
    torch.testing.assert_close(got, want)


def test_jitter_applies_brightness_then_contrast_then_saturation() -> None:
    x, y = _batch(3, n=4)
    f = torch.tensor([[0.6, 1.3, 1.0, 0.9], [1.2, 0.7, 1.1, 1.0], [0.5, 1.5, 0.8, 1.2]])
    out, _ = _op("jitter").apply(x, y, f)
    want = torch.stack([TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], f[0, i].item()),
                                                                f[1, i].item()), f[2, i].item()) for i in range(4)])
    torch.testing.assert_close(out, want, atol=2e-3, rtol=0)


def test_rotate_equals_torchvision() -> None:
    x, y = _batch(1, n=3)
    angles = torch.tensor([0.3, -0.5, 1.0])
    out, _ = _op("rotate").apply(x, y, angles)
    want = torch.stack([TF.rotate(x[i], math.degrees(a), interpolation=TF.InterpolationMode.BILINEAR)
                        for i, a in enumerate(angles.tolist())])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    k = torch.full((3,), OPS.index("rotate"))
    got = apply_op(x, k, angles.abs() / math.radians(30), angles.sign(), RA_RANGES)  # RandAugment's 30 degrees
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_geometric_ops_shift_by_their_magnitude() -> None:
    """translate_x by m moves the image m * range * W pixels left (output(x) = input(x + shift));
    shear_x moves row r by shear * (its normalized height) * W / 2 pixels; _y likewise on columns."""
    x = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    r = dict(RA_RANGES, translate=1.0)
    out = apply_op(x, torch.tensor([OPS.index("translate_x")]), torch.tensor([0.1]), torch.tensor([1.0]), r)
    ref = torch.zeros_like(x)
    ref[..., :18] = x[..., 2:]  # 0.1 * 1.0 * 20 = 2 px
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    out = apply_op(x, torch.tensor([OPS.index("translate_y")]), torch.tensor([0.1]), torch.tensor([-1.0]), r)
    ref = torch.zeros_like(x)
    ref[..., 2:, :] = x[..., :18, :]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    x = torch.rand(1, 1, 21, 21, generator=torch.Generator().manual_seed(0))
    out = apply_op(x, torch.tensor([OPS.index("shear_x")]), torch.ones(1), torch.ones(1), RA_RANGES)  # shear 0.3
    torch.testing.assert_close(out[..., 10, :], x[..., 10, :], atol=1e-5, rtol=0)  # the centre row stays
    torch.testing.assert_close(out[..., 20, :18], x[..., 20, 3:], atol=1e-5, rtol=0)  # bottom row: 3 px left
    torch.testing.assert_close(out[..., 0, 3:], x[..., 0, :18], atol=1e-5, rtol=0)  # top row: 3 px right
    out = apply_op(x, torch.tensor([OPS.index("shear_y")]), torch.ones(1), -torch.ones(1), RA_RANGES)
    torch.testing.assert_close(out[..., :, 10], x[..., :, 10], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 3:, 20], x[..., :18, 20], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., :18, 0], x[..., 3:, 0], atol=1e-5, rtol=0)


def test_ops_drawn_for_a_global_batch_keep_their_rows() -> None:
    """With `draw`, parameters are drawn for the whole global batch and this batch's rows kept: a
    rank's slice equals the same rows of the global batch augmented in one process."""
    from foveal.data.loader import GlobalRows

    x, y = _batch(3, n=12)
    rows = torch.tensor([1, 4, 5, 10])
    for name in NAMES:
        op = _op(name, erase_p=1.0)
        full, _ = op(x, y, torch.Generator().manual_seed(7))
        part, yp = op(x[rows], y[rows], torch.Generator().manual_seed(7), GlobalRows(rows, 12))
        torch.testing.assert_close(part, full[rows], atol=1e-6, rtol=0, msg=name)
        assert torch.equal(yp, y[rows])
    comp = Compose(["flip", "crop", "jitter"], DataConfig(), 10)
    full, _ = comp(x, y, torch.Generator().manual_seed(2))
    part, _ = comp(x[rows], y[rows], torch.Generator().manual_seed(2), GlobalRows(rows, 12))
    torch.testing.assert_close(part, full[rows], atol=1e-6, rtol=0)
    assert comp and comp.pixel_exact is False and Compose(["flip", "crop"], DataConfig(), 10).pixel_exact
    assert not Compose(None, DataConfig(), 10) and Compose(["flip"], DataConfig(), 7).ops[0].num_classes == 7


def test_ops_run_on_the_input_device_and_dtype() -> None:
    """On the meta device (no memory, no kernels): every parameter and intermediate is made where the batch is."""
    x = torch.empty(4, 3, 8, 8, device="meta")
    for name in NAMES:
        op = _op(name)
        params = op.make_params(x, None)
        out, _ = op.apply(x, torch.zeros(4, dtype=torch.long, device="meta"), params)
        assert out.device.type == "meta" and out.shape == x.shape, name
    x64 = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    for name in NAMES:
        out, _ = _op(name, erase_p=1.0)(x64, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(0))
        assert out.dtype == torch.float64, name


def _mix_reference(seed: int, epoch: int, mixup: float, cutmix: float, H: int, W: int):
    """The documented draws of one batch: rng([seed, epoch, 2]); the coin (only with both alphas), lam, the centre."""
    rng = np.random.default_rng([seed, epoch, 2])
    use_cutmix = cutmix > 0 and (mixup == 0 or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    if not use_cutmix:
        return False, lam, None
    cut = math.sqrt(1 - lam)
    cy, cx = rng.integers(H), rng.integers(W)
    box = (int(np.clip(cy - cut * H / 2, 0, H)), int(np.clip(cy + cut * H / 2, 0, H)),
           int(np.clip(cx - cut * W / 2, 0, W)), int(np.clip(cx + cut * W / 2, 0, W)))
    return True, lam, box


@pytest.mark.parametrize("mixup,cutmix,seed,epoch", [(0.4, 0.0, 0, 0), (0.0, 1.0, 3, 2), (1.0, 1.0, 0, 1),
                                                     (1.0, 1.0, 0, 3), (1.0, 1.0, 5, 0), (0.0, 2.0, 1, 1)])
def test_mix_equals_its_definition(mixup, cutmix, seed, epoch) -> None:
    B, K, H, W = 6, 6, 12, 10  # class 5 in no label: one_hot must be told K
    x = torch.arange(B, dtype=torch.float64).view(B, 1, 1, 1).expand(B, 2, H, W).contiguous()  # image i is all i
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mix = MixBatch(mixup, cutmix, K, seed=seed)
    mix.set_epoch(epoch)
    xm, t = mix(x, y)
    cm, lam, box = _mix_reference(seed, epoch, mixup, cutmix, H, W)
    onehot = torch.nn.functional.one_hot(y, K).double()
    if not cm:
        torch.testing.assert_close(xm, x * lam + x.flip(0) * (1 - lam))
    else:
        y0, y1, x0, x1 = box
        ref = x.clone()
        ref[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        assert torch.equal(xm, ref)
        lam = 1 - (y1 - y0) * (x1 - x0) / (H * W)
        kept = (xm[0] == x[0]).double().mean().item()  # the target weight is the fraction of own pixels
        assert kept == pytest.approx(lam)
    assert t.dtype == torch.float64
    torch.testing.assert_close(t, onehot * lam + onehot.flip(0) * (1 - lam))
    # soft targets are mixed the same way; the default seed is 0 and a new mix starts at epoch 0
    x2, t2 = MixBatch(mixup, cutmix, K)(x, onehot)
    x3, t3 = MixBatch(mixup, cutmix, K, seed=0)(x, onehot)
    assert torch.equal(x2, x3) and torch.equal(t2, t3)
    cm0, lam0, _ = _mix_reference(0, 0, mixup, cutmix, H, W)
    if not cm0:
        torch.testing.assert_close(t2, onehot * lam0 + onehot.flip(0) * (1 - lam0))


def test_mix_is_off_only_with_both_alphas_zero() -> None:
    assert not MixBatch(0.0, 0.0, 3) and MixBatch(0.2, 0.0, 3) and MixBatch(0.0, 0.2, 3)
    assert MixBatch(0.5, 0.0, 3) and MixBatch(0.0, 0.5, 3)
    with pytest.raises(ValueError, match=r"data\.mixup \(0\.0\) and data\.cutmix \(-0\.5\) are Beta alphas: use 0 or "
                                         r"more"):
        MixBatch(0.0, -0.5, 3)


def test_equalize_equals_torchvision_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 3, 32, 32), (4, 1, 40, 48), (3, 1, 16, 20), (3, 3, 2, 2)):  # 2 x 2: under 256 pixels, identity
        u = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        u[0] = u[0].clamp(100, 140)  # few levels
        u[1, 0] = 7  # a flat channel
        u[2, 0, 0] = 255  # the top value present once
        ref = torch.stack([TF.equalize(ui) for ui in u]).double() / 255
        got = equalize(u.double() / 255)
        assert got.dtype == torch.float64 and torch.equal(got, ref), shape


def test_apply_op_factors_are_one_plus_signed_magnitude() -> None:
    """RandAugment's enhance ops take factor 1 + sign * magnitude * 0.9 (torchvision: 1 + signed bin value);
    posterize removes magnitude * 4 bits (rounded)."""
    x, _ = _batch(3, n=4)
    mag, sign = torch.tensor([0.5, 1.0, 0.2, 0.7]), torch.tensor([-1.0, 1.0, 1.0, -1.0])
    for name, ref in (("brightness", TF.adjust_brightness), ("color", TF.adjust_saturation),
                      ("contrast", TF.adjust_contrast), ("sharpness", TF.adjust_sharpness)):
        got = apply_op(x, torch.full((4,), OPS.index(name)), mag, sign, RA_RANGES)
        want = torch.stack([ref(x[i], 1 + sign[i].item() * mag[i].item() * 0.9) for i in range(4)])
        torch.testing.assert_close(got, want, atol=2e-3, rtol=0, msg=name)
    got = apply_op(x, torch.full((4,), OPS.index("posterize")), mag, sign, RA_RANGES)
    u8 = (x * 255).round().to(torch.uint8)
    want = torch.stack([TF.posterize(u8[i], 8 - round(mag[i].item() * 4)) for i in range(4)]).float() / 255
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    _, _, s = _op("trivialaugment").make_params(torch.zeros(8, 1, 2, 2, dtype=torch.float64), torch.Generator())
    assert s.dtype == torch.float64


def test_cutmix_boxes_and_lambda_over_many_draws() -> None:
    """The box is centred at a uniform pixel with sides sqrt(1 - lam) H and W, clipped to the image; lam is
    corrected to the pixels actually kept (over 40 batches, boxes cross every edge)."""
    B, K, H, W = 4, 4, 9, 11
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 1, H, W).contiguous()
    y = torch.tensor([0, 1, 2, 3])
    edges = set()
    for epoch in range(40):
        mix = MixBatch(0.0, 1.0, K, seed=11)
        mix.set_epoch(epoch)
        xm, t = mix(x, y)
        _, lam, (y0, y1, x0, x1) = _mix_reference(11, epoch, 0.0, 1.0, H, W)
        ref = x.clone()
        ref[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        assert torch.equal(xm, ref), epoch
        kept = 1 - (y1 - y0) * (x1 - x0) / (H * W)
        assert t[0, 0].item() == pytest.approx(kept) and (xm[0] == 0).float().mean().item() == pytest.approx(kept)
        edges |= {"top"} if y0 == 0 else set()
        edges |= {"bottom"} if y1 == H else set()
        edges |= {"left"} if x0 == 0 else set()
        edges |= {"right"} if x1 == W else set()
    assert edges == {"top", "bottom", "left", "right"}


def test_kernels_on_images_without_black_borders_or_channels() -> None:
    g = torch.Generator().manual_seed(3)
    x = 0.2 + 0.6 * torch.rand(4, 3, 9, 7, generator=g, dtype=torch.float64)
    x[:, 1] = x[:, 1] * 0.5 + 0.3  # channels with different minima and maxima
    torch.testing.assert_close(AU.autocontrast(x), TF.autocontrast(x), atol=1e-12, rtol=0)
    f = torch.tensor([0.3, 1.7, 0.0, 2.0], dtype=torch.float64)
    want = torch.stack([TF.adjust_sharpness(x[i], f[i].item()) for i in range(4)])
    torch.testing.assert_close(AU.sharpen(x, f), want, atol=1e-6, rtol=0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(AU.grayscale(x)[:, 0], luma, atol=1e-14, rtol=0)
    rgba = torch.cat([x, torch.ones_like(x[:, :1])], 1)  # a fourth channel is ignored
    torch.testing.assert_close(AU.grayscale(rgba), AU.grayscale(x), atol=0, rtol=0)
    # RandAugment's translate range (150/331 of the side): output(x) = input(x + 0.453 W), bilinear
    img = torch.rand(1, 1, 6, 20, generator=g)
    out = apply_op(img, torch.tensor([OPS.index("translate_x")]), torch.ones(1), torch.ones(1), RA_RANGES)
    s = 150 / 331 * 20
    i, frac = int(s), s - int(s)
    ref = (1 - frac) * img[..., i:i + 10] + frac * img[..., i + 1:i + 11]
    torch.testing.assert_close(out[..., :10], ref, atol=1e-5, rtol=0)
    out = apply_op(img, torch.tensor([OPS.index("translate_y")]), torch.ones(1), torch.ones(1), RA_RANGES)
    s = 150 / 331 * 6
    i, frac = int(s), s - int(s)
    torch.testing.assert_close(out[..., :2, :], (1 - frac) * img[..., i:i + 2, :] + frac * img[..., i + 1:i + 3, :],
                               atol=1e-5, rtol=0)


def test_erase_on_non_square_images_and_its_dtype() -> None:
    on, y0, x0, h, w, fill = _params("erase", n=20000, shape=(1, 20, 10), erase_p=0.5)
    assert w.max() == 10 and w.min() >= 1 and h.max() <= 20 and (x0 + w <= 10 + 1e-4).all()
    assert _spans(x0 / (10 - w).clamp_min(1e-6), 0, 1, 0.05)
    w_small = _params("erase", n=2000, shape=(1, 2, 2))[4]
    assert w_small.min() == 1
    x = torch.zeros(1, 1, 4, 7)
    params = (torch.tensor([True]), torch.tensor([0.5]), torch.tensor([4.0]), torch.tensor([2.0]),
              torch.tensor([3.0]), torch.ones(1, 1, 4, 7))
    ref = torch.zeros(4, 7)
    ref[1:3, 4:7] = 1  # rows >= 0.5 and < 2.5, columns >= 4 and < 7
    assert torch.equal(_op("erase").apply(x, None, params)[0][0, 0], ref)
    x64 = torch.rand(8, 1, 6, 6, dtype=torch.float64)
    op = _op("erase", erase_p=0.5)
    a = op(x64, None, torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, op(x64, None, torch.Generator().manual_seed(1))[0])  # `on` is drawn from the generator
    assert op.make_params(x64, torch.Generator())[5].dtype == torch.float64


def test_global_batch_draws_in_float64() -> None:
    from foveal.data.loader import GlobalRows

    x = torch.rand(10, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([2, 3, 9])
    for name in ("noise", "erase", "randaugment"):
        op = _op(name, erase_p=1.0)
        full, _ = op(x, None, torch.Generator().manual_seed(5))
        part, _ = op(x[rows], None, torch.Generator().manual_seed(5), GlobalRows(rows, 10))
        assert part.dtype == torch.float64 and torch.equal(part, full[rows]), name
