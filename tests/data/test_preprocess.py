"""Preprocessing arithmetic: one statistics function and one normalizing wrapper, equal to the
formulas they replaced (the eager side of export parity, `Predictor`, and the attacks' pixel model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from foveal.data.images import TensorImages
from foveal.data.preprocess import Normalized, normalize_u8, stats, stats_from_sums

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _u8(n: int = 6, c: int = 3, side: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_stats_are_float64_population_statistics_whatever_the_chunk():
    x = _u8(40)
    a = x.numpy().astype(np.float64) / 255
    want_mean, want_std = a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))
    for chunk in (1, 7, 4096):
        mean, std = stats(x, chunk=chunk)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(std, want_std, rtol=1e-12)
    assert stats(TensorImages(x)) == stats(x)  # an ImageStore and its tensor: the same numbers


def test_a_constant_channel_gets_the_floor_not_zero():
    x = torch.full((4, 2, 5, 5), 77, dtype=torch.uint8)
    mean, std = stats(x)
    assert mean == pytest.approx([77 / 255] * 2) and std == [1e-3, 1e-3]


def test_unbiased_stats_is_torchs_sample_std_in_float64():
    """`unbiased`: the sample std (the fast recipe's and the label check's), the mean unchanged."""
    x = _u8(6)
    a = x.to(torch.float64) / 255
    mean, std = stats(x, chunk=5, unbiased=True)
    assert mean == stats(x)[0]
    np.testing.assert_allclose(std, a.std(dim=(0, 2, 3)).tolist(), rtol=1e-12)


def test_stats_from_sums_is_what_stats_computes():
    x = _u8(5, c=1)
    a = x.to(torch.float64) / 255
    got = stats_from_sums(a.sum(dim=(0, 2, 3)), (a * a).sum(dim=(0, 2, 3)), a.numel())
    assert got == stats(x)


def test_normalized_takes_uint8_as_normalize_u8_and_the_exported_graph_do():
    net = nn.Conv2d(3, 4, 1)
    x = _u8()
    with torch.no_grad():
        got = Normalized(net, MEAN, STD)(x)
        want = net(normalize_u8(x, MEAN, STD)).float()  # the old export wrapper's arithmetic
        by_hand = net((x.float() / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    assert torch.equal(got, want) and torch.equal(got, by_hand)  # bit for bit, not just close


def test_normalized_takes_unit_pixels_as_the_attacks_pixel_model_did():
    net = nn.Conv2d(3, 4, 1)
    px = torch.rand(2, 3, 5, 5, requires_grad=True)
    m = Normalized(net, MEAN, STD)
    out = m(px)
    want = net((px - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    assert torch.equal(out, want)
    out.sum().backward()  # gradients reach the pixels: what FGSM/PGD need
    assert px.grad is not None and px.grad.abs().sum() > 0
    assert torch.equal(m.normalize(_u8()), normalize_u8(_u8(), MEAN, STD))


def test_normalized_moves_its_statistics_with_the_model_and_keeps_logits_float():
    m = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(3 * 81, 2)).double(), MEAN, STD)
    assert set(m.state_dict()) >= {"mean", "std"} and m.mean.dtype == torch.float32
    out = Normalized(nn.Flatten(), MEAN, STD)(_u8().to(torch.float64) / 255)
    assert out.dtype == torch.float32


def test_the_training_loader_normalizes_as_the_wrapper_to_float_rounding():
    """The training loader's fused Normalizer (x * 1/(255 std) - mean/std) is the same map."""
    from foveal.data.loader import Normalizer

    x = _u8()
    fused, _ = Normalizer(MEAN, STD, None, torch.device("cpu"))(x, torch.zeros(len(x)), torch.Generator())
    torch.testing.assert_close(fused, Normalized(nn.Identity(), MEAN, STD)(x), rtol=0, atol=2e-6)
