import torch

from foveal.metrics.calibration import fit_temperature, reliability


def test_temperature_scaling_lowers_ece_on_held_out_data():
    # An over-confident classifier: correct 70% of the time but logits scaled x4.
    g = torch.Generator().manual_seed(0)
    N, K = 4000, 10
    labels = torch.randint(0, K, (N,), generator=g)
    logits = torch.randn(N, K, generator=g)
    right = torch.rand(N, generator=g) < 0.7
    logits[right, labels[right]] += 2.0
    logits *= 4.0
    fit_idx, held = torch.arange(0, N // 2), torch.arange(N // 2, N)
    t = fit_temperature(logits[fit_idx], labels[fit_idx])
    assert t > 1.5  # over-confidence is cooled
    before = reliability(logits[held], labels[held])["ece"]
    after = reliability(logits[held], labels[held], temperature=t)["ece"]
    assert after < before * 0.5, (before, after)
    assert torch.equal((logits / t).argmax(1), logits.argmax(1))


def test_reliability_bins_count_every_sample():
    logits = torch.randn(100, 3)
    r = reliability(logits, torch.zeros(100, dtype=torch.long), n_bins=10)
    assert sum(r["bin_count"]) == 100 and 0 <= r["ece"] <= 1
