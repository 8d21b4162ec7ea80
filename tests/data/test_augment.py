"""Batched augmentations: shapes, determinism, that each op acts, identities at magnitude 0, statistics."""

from __future__ import annotations

import dataclasses

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
    x, y = _batch(3)
    cfg = DataConfig()
    assert not Compose([], cfg, 10)
    out, _ = Compose(["flip", "flip"], cfg, 10)(x, y, torch.Generator().manual_seed(0))
    assert out.shape == x.shape


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
    from foveal.data.loader import Normalizer, normalize_u8

    u8 = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = [0.2, 0.3, 0.4], [0.5, 0.25, 0.2]
    got = normalize_u8(u8, mean, std)
    train, _ = Normalizer(mean, std, None, torch.device("cpu"))(u8, torch.zeros(8), torch.Generator())
    assert got.dtype == torch.float32 and got.shape == u8.shape
    torch.testing.assert_close(got, train, rtol=0, atol=1e-5)
    as_tensors = normalize_u8(u8, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
    assert torch.equal(got, as_tensors)
    torch.testing.assert_close(got[0, 1, 0, 0].item(), (u8[0, 1, 0, 0].item() / 255 - 0.3) / 0.25, rtol=0, atol=1e-6)
