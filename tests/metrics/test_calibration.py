import math

import numpy as np
import pytest
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


# ---- exact values against the definitions (Guo et al. 2017) and scikit-learn ------------------------------


def _overconfident(seed: int, N: int = 600, K: int = 5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (N,), generator=g)
    logits = torch.randn(N, K, generator=g) * 2
    logits[torch.arange(N), labels] += torch.rand(N, generator=g) * 3
    return logits, labels


def _reference_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[float, np.ndarray]:
    """ECE = sum over bins of |bin| / N * |mean confidence - accuracy|, equal-width bins [k/M, (k+1)/M),
    the last one closed (the convention of torchmetrics' `_binning_bucketize`)."""
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="right")
    counts = np.bincount(idx, minlength=n_bins)
    ece = sum(abs(conf[idx == b].mean() - correct[idx == b].mean()) * counts[b] for b in range(n_bins) if counts[b])
    return ece / len(conf), counts


@pytest.mark.parametrize("seed,n_bins", [(0, 15), (1, 10), (2, 7)])
def test_reliability_equals_the_definition_and_scikit_learn(seed, n_bins):
    from sklearn.calibration import calibration_curve

    logits, labels = _overconfident(seed)
    r = reliability(logits, labels, n_bins=n_bins)
    probs = torch.softmax(logits.double(), 1).numpy()
    conf, correct = probs.max(1), (probs.argmax(1) == labels.numpy()).astype(float)
    ece, counts = _reference_ece(conf, correct, n_bins)
    assert r["ece"] == pytest.approx(ece, rel=1e-6)
    assert r["bin_count"] == counts.tolist()
    assert r["bin_edges"] == pytest.approx(np.linspace(0, 1, n_bins + 1).tolist(), abs=1e-15)
    # scikit-learn's reliability diagram: (accuracy, mean confidence) of the non-empty bins
    acc, mean_conf = calibration_curve(correct, conf, n_bins=n_bins)
    nz = counts > 0
    assert np.asarray(r["bin_accuracy"])[nz] == pytest.approx(acc, abs=1e-12)
    assert np.asarray(r["bin_confidence"])[nz] == pytest.approx(mean_conf, rel=1e-6)
    assert all(a == 0 and c == 0 for a, c, n in zip(r["bin_accuracy"], r["bin_confidence"], counts) if n == 0)


def test_reliability_defaults_and_temperature():
    logits, labels = _overconfident(3)
    r = reliability(logits, labels)
    assert len(r["bin_count"]) == 15 and len(r["bin_edges"]) == 16
    assert r == reliability(logits, labels, 15, 1.0)
    hot = reliability(logits, labels, temperature=2.5)
    assert hot == reliability(logits / 2.5, labels)
    assert hot["ece"] != r["ece"]


def test_reliability_single_samples_and_edges():
    # one sample: ECE is |confidence - correctness|, and the sample's bin has count 1
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    conf = torch.softmax(logits, 1)[0, 0].item()
    for label, correct in ((0, 1.0), (1, 0.0)):
        r = reliability(logits, torch.tensor([label]), n_bins=10)
        assert r["ece"] == pytest.approx(abs(conf - correct), rel=1e-6)
        b = int(conf * 10)
        assert r["bin_count"][b] == 1 and sum(r["bin_count"]) == 1
        assert r["bin_confidence"][b] == pytest.approx(conf, rel=1e-6) and r["bin_accuracy"][b] == correct
    # a confidence exactly on an edge (0.5 of two tied logits) opens the upper bin: bins are [lo, hi)
    r = reliability(torch.zeros(4, 2), torch.tensor([0, 0, 0, 1]), n_bins=10)
    assert r["bin_count"][5] == 4 and r["bin_accuracy"][5] == 0.75
    assert r["ece"] == pytest.approx(0.25)
    # confidence 1 lands in the last bin
    r = reliability(torch.tensor([[100.0, 0.0]]), torch.tensor([0]), n_bins=4)
    assert r["bin_count"] == [0, 0, 0, 1] and r["ece"] == pytest.approx(0.0, abs=1e-12)


def test_calibration_report_is_reliability_before_and_after():
    from foveal.metrics.calibration import calibration_report

    logits, labels = _overconfident(4)
    rep = calibration_report(logits, labels, 1.7)
    assert set(rep) == {"temperature", "before", "after"} and rep["temperature"] == 1.7
    assert rep["before"] == reliability(logits, labels)
    assert rep["after"] == reliability(logits, labels, 15, 1.7)


def _nll(logits: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    return torch.nn.functional.cross_entropy(logits.double() / t, labels).item()


# L-BFGS on a float32 loss stops within ~0.5% of the minimizing T (the NLL is flat there: 1e-6 nats off)
T_REL = 1e-2


def test_fit_temperature_equals_the_closed_form():
    """Two classes, every logit pair (s, 0), a fraction p labelled 0: NLL(T) is least where
    sigmoid(s / T) = p, so T = s / logit(p) exactly."""
    for s, p, n in ((6.0, 0.75, 400), (1.0, 0.9, 500), (2.0, 0.6, 500)):
        logits = torch.tensor([[s, 0.0]]).repeat(n, 1)
        labels = (torch.arange(n) >= int(p * n)).long()
        t = fit_temperature(logits, labels)
        assert t == pytest.approx(s / math.log(p / (1 - p)), rel=T_REL), (s, p)


def test_fit_temperature_equals_scipy_on_multiclass_logits():
    from scipy.optimize import minimize_scalar

    for seed in (0, 1):
        logits, labels = _overconfident(seed, N=800)
        ref = minimize_scalar(lambda lt: _nll(logits, labels, math.exp(lt)), bounds=(-3, 3), method="bounded",
                              options={"xatol": 1e-9}).x
        assert fit_temperature(logits, labels) == pytest.approx(math.exp(ref), rel=T_REL)


def test_fit_temperature_falls_back_to_one_outside_the_trusted_range():
    # labels independent of the logits: NLL keeps falling as T grows (uniform predictions), T is not trusted
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(300, 4, generator=g) * 3, torch.randint(0, 4, (300,), generator=g)
    assert fit_temperature(logits, labels) == 1.0
    # T* = s / logit(p) just above 20 (refused) and just above 0.05 (kept); under-confident data gives T < 1
    n, p = 400, 0.75
    labels = (torch.arange(n) >= int(p * n)).long()
    for t_star, expected in ((20.5, 1.0), (0.06, 0.06), (0.5, 0.5)):
        logits = torch.tensor([[t_star * math.log(3), 0.0]]).repeat(n, 1)
        assert fit_temperature(logits, labels) == pytest.approx(expected, rel=T_REL), t_star
