"""Attacks on a small CNN trained on scikit-learn's digits: monotone in ε, PGD no weaker than FGSM,
projections respected, and the gradient-masking guard fires on masked models only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foveal.robustness.attacks import AttackSpec, PixelModel, attack_sweep, fgsm, pgd

EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
ATTACKS = (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", 10))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8) in [0, 1]
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN (pixel space, normalization inside PixelModel) and 300 held-out digits."""
    torch.manual_seed(0)
    x, y = _digits()
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
    model = PixelModel(net, [0.3], [0.4])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(100):  # full batch on the first 1497 digits: ~1 s on an idle core
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1497]), y[:1497]).backward()
        opt.step()
    return model.eval(), x[1497:], y[1497:]


def test_pixel_model_applies_normalization() -> None:
    net = nn.Conv2d(3, 2, 1)
    m = PixelModel(net, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    x = torch.rand(2, 3, 5, 5)
    ref = net((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
    assert torch.allclose(m(x), ref)


def test_accuracy_falls_with_eps_and_pgd_beats_fgsm(trained) -> None:
    model, x, y = trained
    r = attack_sweep(model, x, y, EPS, (), ATTACKS, batch_size=128)
    assert r["clean_accuracy"] > 0.9
    tol = 2 / len(x)  # two samples: the random start may flip a borderline one
    for name in ("fgsm_linf", "pgd_linf"):
        accs = [r["attacks"][name][f"{e:g}"] for e in EPS]
        assert accs[0] == pytest.approx(r["clean_accuracy"])
        assert all(b <= a + tol for a, b in zip(accs, accs[1:])), (name, accs)
        assert accs[-1] < accs[0] - 0.3, (name, accs)
    for e in EPS:
        assert r["attacks"]["pgd_linf"][f"{e:g}"] <= r["attacks"]["fgsm_linf"][f"{e:g}"] + tol
    assert r["attacks"]["pgd_linf"]["0.3"] < 0.05
    assert r["warnings"] == [] and r["suspect_gradient_masking"] is False


def test_perturbations_stay_in_ball_and_image(trained) -> None:
    model, x, y = trained
    x, y = x[:64], y[:64]
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        for adv in (pgd(model, x, y, eps, steps=5, norm=norm, restarts=2), fgsm(model, x, y, eps, norm)):
            d = (adv - x).flatten(1)
            size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
            assert float(size.max()) <= eps + 1e-5 and float(adv.min()) >= 0 and float(adv.max()) <= 1


class Quantized(nn.Module):
    """Shattered gradients: the input is rounded to 8 levels, so d loss / d x = 0 everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 8) / 8)


class Saturated(nn.Module):
    """Saturated softmax: logits x 1e4 make the cross-entropy flat (zero gradient) on correct samples."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1e4


@pytest.mark.parametrize("wrapper", [Quantized, Saturated])
def test_masking_guard_fires_on_masked_models(trained, wrapper) -> None:
    model, x, y = trained
    r = attack_sweep(wrapper(model).eval(), x, y, EPS, (), ATTACKS, batch_size=128)
    assert r["clean_accuracy"] > 0.85  # the wrapper keeps the model's accuracy: only its gradients are broken
    assert r["suspect_gradient_masking"] is True
    assert any("zero" in w for w in r["warnings"]), r["warnings"]


def test_zero_eps_skips_the_gradient_passes(trained, monkeypatch) -> None:
    """ε = 0 (the sweeps' first point) returns the images unchanged without a gradient pass: the loop would
    land on x too (every step projects onto the zero ball), as a vanishing ε shows."""
    from foveal.robustness import attacks

    model, x, y = trained
    x, y = x[:8], y[:8]
    calls = []
    monkeypatch.setattr(attacks, "input_grad", lambda *a, **k: calls.append(1))
    for norm in ("linf", "l2"):
        assert torch.equal(attacks.pgd(model, x, y, 0.0, steps=5, norm=norm, restarts=2), x)
        assert torch.equal(attacks.fgsm(model, x, y, 0.0, norm), x)
    assert not calls
    monkeypatch.undo()
    for norm in ("linf", "l2"):
        tiny = attacks.pgd(model, x, y, 1e-9, steps=2, norm=norm, generator=torch.Generator().manual_seed(0))
        assert (tiny - x).abs().max() < 1e-6


def test_sweep_fgsm_reuses_the_clean_gradient(trained, monkeypatch) -> None:
    """The sweep computes the input gradient at the clean images once per batch (it needs it for the masking
    guard anyway) and builds every FGSM point, both norms and every ε, from it: the same accuracies and losses as
    `fgsm` called per point, with one gradient pass per batch instead of one per (norm, ε) and batch."""
    from foveal.robustness import attacks

    model, x, y = trained
    calls = []
    real = attacks.input_grad
    monkeypatch.setattr(attacks, "input_grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    specs = (AttackSpec("fgsm", "linf"), AttackSpec("fgsm", "l2"))
    r = attack_sweep(model, x, y, EPS, (0.5, 1.0, 2.0), attacks=specs, batch_size=128, huge_eps=None)
    assert len(calls) == 3  # 300 images in batches of 128: one pass each
    accs = []
    for norm, eps_list in (("linf", EPS), ("l2", (0.5, 1.0, 2.0))):
        for e in eps_list:
            adv = torch.cat([fgsm(model, x[i:i + 128], y[i:i + 128], e, norm) for i in range(0, len(x), 128)])
            with torch.no_grad():
                logits = model(adv)
            acc = (logits.argmax(1) == y).double().mean().item()
            loss = nn.functional.cross_entropy(logits, y, reduction="none").double().mean().item()
            assert r["attacks"][f"fgsm_{norm}"][f"{e:g}"] == pytest.approx(acc, abs=1e-12)
            assert r["attack_loss"][f"fgsm_{norm}"][f"{e:g}"] == pytest.approx(loss, rel=1e-5)
            accs.append(acc)
    assert accs[0] > accs[len(EPS) - 1] + 0.2 and min(accs) < 0.9  # the attack bites: the points differ
