"""Attacks on a small CNN trained on scikit-learn's digits: monotone in ε, PGD no weaker than FGSM,
projections respected, and the gradient-masking guard fires on masked models only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foveal.data.preprocess import Normalized
from foveal.robustness.attacks import AttackSpec, attack_sweep, fgsm, pgd

EPS = (0.0, 0.05, 0.1, 0.2, 0.3)
ATTACKS = (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", 10))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16  # (N, 1, 8, 8) in [0, 1]
    return x, torch.tensor(d.target)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN (pixel space, normalization inside Normalized) and 300 held-out digits."""
    torch.manual_seed(0)
    x, y = _digits()
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
    model = Normalized(net, [0.3], [0.4])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(100):  # full batch on the first 1497 digits: ~1 s on an idle core
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1497]), y[:1497]).backward()
        opt.step()
    return model.eval(), x[1497:], y[1497:]


def test_normalized_model_applies_normalization() -> None:
    net = nn.Conv2d(3, 2, 1)
    m = Normalized(net, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
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


# ---- the pieces against their definitions -------------------------------------------------------------------

from foveal.robustness import attacks as A  # noqa: E402
from foveal.robustness.draws import ImageDraws  # noqa: E402


def _linear(seed: int = 0, c: int = 1, hw: int = 4, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, k)).eval()


def _pgd_reference(model, x, y, eps, alpha, steps, norm):
    """Madry et al.'s PGD from x (no random start): ascend the loss, project onto the eps-ball and [0, 1]."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(adv), y, reduction="sum"), adv)
        with torch.no_grad():
            if norm == "linf":
                adv = torch.min(torch.max(adv + alpha * g.sign(), x - eps), x + eps)
            else:
                step = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                d = adv + alpha * step - x
                n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                adv = x + d * torch.clamp(eps / n, max=1.0)
            adv = adv.clamp(0, 1)
    return adv.detach()


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.03), ("l2", 0.5, 0.2)])
def test_pgd_without_random_start_equals_the_reference_loop(norm, eps, alpha) -> None:
    model = _linear(1)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x[0] = 0.0  # an image at the edge of [0, 1]: the clamp binds
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    got = A.pgd(model, x, y, eps, alpha, steps=4, norm=norm, rand_init=False)
    torch.testing.assert_close(got, _pgd_reference(model, x, y, eps, alpha, 4, norm), rtol=0, atol=1e-6)
    # alpha defaults to 2.5 eps / steps (Madry's rule)
    torch.testing.assert_close(A.pgd(model, x, y, eps, steps=4, norm=norm, rand_init=False),
                               _pgd_reference(model, x, y, eps, 2.5 * eps / 4, 4, norm), rtol=0, atol=1e-6)


def test_fgsm_is_one_signed_or_normalized_step() -> None:
    model = _linear(2)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    g = A.input_grad(model, x, y)
    xr = x.clone().requires_grad_(True)
    (ref_g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xr), y, reduction="sum"), xr)
    torch.testing.assert_close(g, ref_g)
    torch.testing.assert_close(A.fgsm(model, x, y, 0.1), (x + 0.1 * ref_g.sign()).clamp(0, 1))
    unit = ref_g / ref_g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(A.fgsm(model, x, y, 0.7, "l2"), (x + 0.7 * unit).clamp(0, 1))
    # a custom per-sample loss is what gets differentiated (here: the negated cross-entropy)
    neg = A.input_grad(model, x, y, loss_fn=lambda lo, t: -nn.functional.cross_entropy(lo, t, reduction="none"))
    torch.testing.assert_close(neg, -ref_g)
    torch.testing.assert_close(A.fgsm(model, x, y, 0.1, loss_fn=lambda lo, t: -nn.functional.cross_entropy(
        lo, t, reduction="none")), (x - 0.1 * ref_g.sign()).clamp(0, 1))
    # a zero gradient steps nowhere (no division by zero)
    assert torch.equal(A.fgsm_from_grad(x, torch.zeros_like(x), 0.5, "l2"), x)
    out = torch.tensor([[[[1.2, -0.1]]]])
    assert torch.equal(A.fgsm(model, out, y[:1], 0.0), out.clamp(0, 1))
    assert torch.equal(A.fgsm_from_grad(out, torch.ones_like(out), 0.0, "linf"), out.clamp(0, 1))
    with pytest.raises(ValueError, match="attack norm 'l1' is not one of 'linf', 'l2'"):
        A.fgsm(model, x, y, 0.1, "l1")
    with pytest.raises(ValueError, match="attack norm 'l1'"):
        A.fgsm_from_grad(x, g, 0.1, "l1")
    with pytest.raises(ValueError, match="attack norm 'l1'"):
        A.pgd(model, x, y, 0.1, norm="l1")


def test_projection_and_step() -> None:
    d = torch.tensor([[[[0.5, -0.2, 0.05]]], [[[3.0, 4.0, 0.0]]]])  # (2, 1, 1, 3)
    assert torch.equal(A._project(d, 0.1, "linf"), torch.tensor([[[[0.1, -0.1, 0.05]]], [[[0.1, 0.1, 0.0]]]]))
    eps = torch.tensor([0.2, 1.0]).view(2, 1, 1, 1)  # per-sample radii
    assert torch.allclose(A._project(d, eps, "linf"), torch.tensor([[[[0.2, -0.2, 0.05]]], [[[1.0, 1.0, 0.0]]]]))
    p = A._project(d, 1.0, "l2")  # |d0| = 0.541 stays, |d1| = 5 shrinks to 1
    torch.testing.assert_close(p, torch.cat([d[:1], d[1:] / 5]))
    p = A._project(d, eps, "l2")
    torch.testing.assert_close(p, torch.cat([d[:1] * 0.2 / d[0].norm(), d[1:] / 5]))
    assert torch.equal(A._project(torch.zeros(1, 1, 1, 3), 1.0, "l2"), torch.zeros(1, 1, 1, 3))
    g = torch.tensor([[[[3.0, -4.0]]], [[[0.0, 0.0]]]])
    assert torch.equal(A._step(g, 0.5, "linf"), torch.tensor([[[[0.5, -0.5]]], [[[0.0, 0.0]]]]))
    assert torch.allclose(A._step(g, 0.5, "l2"), torch.tensor([[[[0.3, -0.4]]], [[[0.0, 0.0]]]]))


def test_random_start_is_uniform_in_the_ball() -> None:
    x = torch.zeros(20000, 1, 1, 2)
    linf = A.random_start(x, 0.3, "linf", torch.Generator().manual_seed(0))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(linf, (2 * u - 1) * 0.3)
    assert linf.abs().max() <= 0.3 and abs(linf.mean().item()) < 0.01 and linf.max() > 0.29 and linf.min() < -0.29
    l2 = A.random_start(x, 2.0, "l2", torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    d = torch.randn(x.shape, generator=g)
    r = torch.rand(len(x), generator=g) ** 0.5  # in 2 dimensions the radius of a uniform draw is eps * sqrt(u)
    torch.testing.assert_close(l2, d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * (2.0 * r).view(-1, 1, 1, 1))
    n = l2.flatten(1).norm(dim=1)
    assert n.max() <= 2.0 + 1e-6 and abs((n < 1.0).float().mean().item() - 0.25) < 0.02  # area fraction (1/2)^2
    per_image = A.random_start(torch.zeros(4, 1, 2, 2), 0.5, "l2", ImageDraws(0, "s", range(4)))
    again = A.random_start(torch.zeros(2, 1, 2, 2), 0.5, "l2", ImageDraws(0, "s", [2, 3]))
    torch.testing.assert_close(per_image[2:], again)


def test_pgd_restarts_never_weaken_the_attack_and_eps_zero_clamps() -> None:
    model = _linear(3)
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(3))

    def loss(a):
        with torch.no_grad():
            return nn.functional.cross_entropy(model(a), y, reduction="none")

    one = A.pgd(model, x, y, 0.05, steps=2, generator=torch.Generator().manual_seed(4))
    three = A.pgd(model, x, y, 0.05, steps=2, restarts=3, generator=torch.Generator().manual_seed(4))
    assert (loss(three) >= loss(one)).all() and (loss(three) > loss(one)).any()
    assert (loss(one) > loss(x)).all()
    zero = A.pgd(model, x, y, 0.05, steps=2, restarts=0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(zero, one)  # restarts < 1 runs once
    assert (three - x).abs().max() <= 0.05 + 1e-6
    out = torch.tensor([[[[1.2, -0.1, 0.5, 0.5]]]]).expand(1, 1, 4, 4).contiguous()
    assert torch.equal(A.pgd(model, out, y[:1], 0.0), out.clamp(0, 1))


def test_pixel_model_channels_last() -> None:
    seen = []

    class Probe(nn.Module):
        def forward(self, z):
            seen.append(z.is_contiguous(memory_format=torch.channels_last))
            return z.mean((2, 3))

    x = torch.rand(2, 3, 4, 5)
    a = Normalized(Probe(), [0.1, 0.2, 0.3], [0.5, 0.5, 0.25], channels_last=True)(x)
    b = Normalized(Probe(), [0.1, 0.2, 0.3], [0.5, 0.5, 0.25])(x)
    assert seen == [True, False] and torch.allclose(a, b)
    m = Normalized(Probe(), [0.1, 0.2, 0.3], [0.5, 0.5, 0.25])
    assert m.mean.dtype == torch.float32 and m.mean.shape == (1, 3, 1, 1) and m.std.shape == (1, 3, 1, 1)
    assert "mean" in m.state_dict() and "std" in m.state_dict()


def test_attack_spec_runs_its_method() -> None:
    model = _linear(4)
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 0])
    spec = AttackSpec()
    assert (spec.method, spec.norm, spec.steps, spec.alpha_ratio, spec.restarts) == ("pgd", "linf", 40, 2.5, 1)
    assert spec.name == "pgd_linf" and AttackSpec("fgsm", "l2").name == "fgsm_l2"
    assert torch.equal(AttackSpec("fgsm", "l2").run(model, x, y, 0.3), A.fgsm(model, x, y, 0.3, "l2"))
    s = AttackSpec("pgd", "l2", steps=3, alpha_ratio=1.5, restarts=2)
    got = s.run(model, x, y, 0.4, torch.Generator().manual_seed(0))
    ref = A.pgd(model, x, y, 0.4, 1.5 * 0.4 / 3, 3, "l2", restarts=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, ref)
    with pytest.raises(ValueError, match="attack method 'cw' is not one of 'fgsm', 'pgd'"):
        AttackSpec("cw").run(model, x, y, 0.1)


def test_sweep_numbers_are_the_definitions_and_do_not_depend_on_the_batch_size() -> None:
    model = _linear(5, k=4)
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    y = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(7))
    specs = (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", 3), AttackSpec("pgd", "l2", 2))
    a = attack_sweep(model, x, y, (0.0, 0.1), (0.5,), specs, batch_size=7, seed=3, huge_eps=0.8)
    b = attack_sweep(model, x, y, (0.0, 0.1), (0.5,), specs, batch_size=30, seed=3, huge_eps=0.8)
    for k in ("clean_accuracy", "clean_loss", "zero_grad_fraction"):
        assert a[k] == pytest.approx(b[k], abs=1e-6), k
    for k in ("attacks", "attack_loss"):
        for name in a[k]:
            assert a[k][name] == pytest.approx(b[k][name], abs=1e-6), (k, name)
    assert a["noise_loss"] == pytest.approx(b["noise_loss"], abs=1e-6) and a["huge_eps"] == b["huge_eps"]
    assert set(a["attacks"]) == {"fgsm_linf", "pgd_linf", "pgd_l2"} and set(a["attacks"]["pgd_l2"]) == {"0.5"}
    assert set(a["attacks"]["pgd_linf"]) == {"0", "0.1"} and a["n"] == 30
    with torch.no_grad():
        logits = model(x)
        ce = nn.functional.cross_entropy(logits, y, reduction="none")
    assert a["clean_accuracy"] == pytest.approx((logits.argmax(1) == y).double().mean().item(), abs=1e-12)
    assert a["clean_loss"] == pytest.approx(ce.double().mean().item(), rel=1e-6)
    assert a["zero_grad_fraction"] == 0.0 and a["attack_loss"]["pgd_linf"]["0"] == pytest.approx(a["clean_loss"])
    # the noise baseline: the images under image-keyed random L-inf starts of each eps
    noisy = (x + A.random_start(x, 0.1, "linf", ImageDraws(3, "noise:0.1", range(30)))).clamp(0, 1)
    with torch.no_grad():
        ref = nn.functional.cross_entropy(model(noisy), y).item()
    assert a["noise_loss"]["0.1"] == pytest.approx(ref, rel=1e-6) and set(a["noise_loss"]) == {"0", "0.1"}
    # PGD's random starts are keyed per image too: the same as pgd called with the sweep's draws
    adv = A.pgd(model, x, y, 0.1, 2.5 * 0.1 / 3, 3, "linf", generator=ImageDraws(3, "pgd_linf:0.1", range(30)))
    with torch.no_grad():
        acc = (model(adv).argmax(1) == y).double().mean().item()
    assert a["attacks"]["pgd_linf"]["0.1"] == pytest.approx(acc, abs=1e-12)
    huge = A.pgd(model, x, y, 0.8, 0.2, 10, "linf", generator=ImageDraws(3, "huge", range(30)))
    with torch.no_grad():
        acc = (model(huge).argmax(1) == y).double().mean().item()
    assert a["huge_eps"] == {"eps": 0.8, "accuracy": pytest.approx(acc, abs=1e-12)}
    c = attack_sweep(model, x, y, (0.1,), (), (AttackSpec("fgsm", "linf"),), batch_size=8, huge_eps=None)
    assert "huge_eps" not in c and c["suspect_gradient_masking"] is bool(c["warnings"])
    assert model.training is False


def _report(**kw) -> dict:
    r = {"n": 100, "zero_grad_fraction": 0.0, "clean_loss": 0.5, "noise_loss": {"0.1": 0.6},
         "attacks": {"fgsm_linf": {"0.1": 0.5, "0.2": 0.3}, "pgd_linf": {"0.1": 0.4, "0.2": 0.2}},
         "attack_loss": {"fgsm_linf": {"0.1": 2.0}, "pgd_linf": {"0.1": 3.0}}, "huge_eps": {"eps": 1.0, "accuracy": 0.0}}
    r.update(kw)
    return r


def test_masking_warnings_each_sign_and_its_threshold() -> None:
    from foveal.robustness.attacks import masking_warnings

    assert masking_warnings(_report(), 10) == []
    assert masking_warnings(_report(zero_grad_fraction=0.5), 10) == []
    assert masking_warnings(_report(zero_grad_fraction=0.75), 10) == [
        "input gradient is exactly zero for 75% of samples: gradients are masked (quantized, non-differentiable or "
        "saturated outputs); gradient attacks are not reliable"]
    # the attack loss must rise above max(clean, noise) * 1.01 + 1e-4; eps 0 is exempt
    floor = 0.6 * 1.01 + 1e-4
    assert masking_warnings(_report(attack_loss={"pgd_linf": {"0.1": floor + 1e-6, "0": 0.0}}), 10) == []
    assert masking_warnings(_report(attack_loss={"pgd_linf": {"0.1": floor - 1e-6}}), 10) == [
        f"pgd_linf at eps=0.1: attack loss {floor - 1e-6:.4g} does not rise above the clean/random-noise loss 0.6"]
    assert masking_warnings(_report(attack_loss={"pgd_linf": {"0.3": 0.5 * 1.01}}), 10) == [
        "pgd_linf at eps=0.3: attack loss 0.505 does not rise above the clean/random-noise loss 0.5"]  # no noise entry
    # PGD weaker than FGSM by more than tol = max(1%, 2 / n)
    w = masking_warnings(_report(attacks={"fgsm_linf": {"0.1": 0.5}, "pgd_linf": {"0.1": 0.53}}), 10)
    assert w == ["pgd_linf at eps=0.1 is weaker than FGSM (0.5300 > 0.5000 accuracy)"]
    assert masking_warnings(_report(attacks={"fgsm_linf": {"0.1": 0.5}, "pgd_linf": {"0.1": 0.515}}), 10) == []
    assert masking_warnings(_report(n=1000, attacks={"fgsm_linf": {"0.1": 0.5}, "pgd_linf": {"0.1": 0.515}}), 10)
    w = masking_warnings(_report(attacks={"fgsm_l2": {"1": 0.2}, "pgd_l2": {"1": 0.3}}), 10)
    assert w == ["pgd_l2 at eps=1 is weaker than FGSM (0.3000 > 0.2000 accuracy)"]
    # accuracy rising with eps (sorted numerically, not as strings)
    w = masking_warnings(_report(attacks={"pgd_linf": {"0.1": 0.2, "0.05": 0.3, "0.3": 0.25}}), 10)
    assert w == ["pgd_linf: accuracy rises from 0.2000 at eps=0.1 to 0.2500 at eps=0.3"]
    assert masking_warnings(_report(attacks={"pgd_linf": {"0.1": 0.2, "0.3": 0.215}}), 10) == []
    assert masking_warnings(_report(attacks={"pgd_linf": {"0.1": 0.2, "0.3": 0.205}}), 10, tol=0.001) == [
        "pgd_linf: accuracy rises from 0.2000 at eps=0.1 to 0.2050 at eps=0.3"]
    # a huge eps must bring accuracy within 10 points of chance
    assert masking_warnings(_report(huge_eps={"eps": 1.0, "accuracy": 0.2}), 10) == []
    assert masking_warnings(_report(huge_eps={"eps": 1.0, "accuracy": 0.21}), 10) == [
        "PGD at eps=1 (any image reachable) leaves accuracy 0.2100, far above chance 0.100"]
    assert masking_warnings(_report(huge_eps={"eps": 1.0, "accuracy": 0.55}), 2) == []
    assert masking_warnings(_report(huge_eps=None), 10) == [] and masking_warnings(_report(huge_eps={}), 10) == []


# ---- the guard and the gradient-pass savings on a small linear model (fast enough for mutation testing) -------


def _digits_linear():
    """A linear classifier fitted in closed form-ish (a few Adam steps) on 8x8 digits: ~0.9 accurate, in 0.1 s."""
    x, y = _digits()
    torch.manual_seed(0)
    model = Normalized(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), [0.3], [0.4])
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1000]), y[:1000]).backward()
        opt.step()
    return model.eval(), x[1000:1200], y[1000:1200]


@pytest.mark.parametrize("wrapper", [None, Quantized, Saturated])
def test_guard_on_a_linear_model(wrapper) -> None:
    model, x, y = _digits_linear()
    m = model if wrapper is None else wrapper(model).eval()
    r = attack_sweep(m, x, y, (0.0, 0.1, 0.3), (), (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", 5)),
                     batch_size=64, huge_eps=1.0)
    assert r["clean_accuracy"] > 0.85
    if wrapper is None:
        assert r["warnings"] == [] and r["suspect_gradient_masking"] is False and r["zero_grad_fraction"] == 0.0
        assert r["attacks"]["pgd_linf"]["0.3"] < 0.1 and r["huge_eps"]["accuracy"] < 0.1
    else:
        assert r["suspect_gradient_masking"] is True and r["zero_grad_fraction"] > 0.5
        assert r["warnings"][0].startswith("input gradient is exactly zero for")


def test_zero_eps_and_fgsm_reuse_count_gradient_passes(monkeypatch) -> None:
    model, x, y = _digits_linear()
    calls = []
    real = A.input_grad
    monkeypatch.setattr(A, "input_grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    for norm in ("linf", "l2"):
        assert torch.equal(A.pgd(model, x[:8], y[:8], 0.0, steps=5, norm=norm, restarts=2), x[:8])
        assert torch.equal(A.fgsm(model, x[:8], y[:8], 0.0, norm), x[:8])
    assert not calls
    specs = (AttackSpec("fgsm", "linf"), AttackSpec("fgsm", "l2"))
    r = attack_sweep(model, x, y, (0.0, 0.1), (0.5, 1.0), attacks=specs, batch_size=64, huge_eps=None)
    assert len(calls) == 4  # 200 images in batches of 64: one gradient pass each, shared by every FGSM point
    for norm, e in (("linf", 0.1), ("l2", 1.0)):
        adv = torch.cat([real(model, x[i:i + 64], y[i:i + 64]) for i in range(0, 200, 64)])
        adv = A.fgsm_from_grad(x, adv, e, norm)
        with torch.no_grad():
            acc = (model(adv).argmax(1) == y).double().mean().item()
        assert r["attacks"][f"fgsm_{norm}"][f"{e:g}"] == pytest.approx(acc, abs=1e-12)


def test_defaults_custom_losses_and_edge_values() -> None:
    model = _linear(6)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    x[0] = 0.0
    x[1] = 1.0
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    # the default is 40 steps of 2.5 eps / 40
    torch.testing.assert_close(A.pgd(model, x, y, 0.1, rand_init=False),
                               _pgd_reference(model, x, y, 0.1, 2.5 * 0.1 / 40, 40, "linf"), rtol=0, atol=1e-6)
    # a custom loss drives every step and the choice between restarts: the negated loss lowers the cross-entropy
    neg = lambda lo, t: -nn.functional.cross_entropy(lo, t, reduction="none")  # noqa: E731
    with torch.no_grad():
        clean = nn.functional.cross_entropy(model(x), y, reduction="none")
    adv = A.pgd(model, x, y, 0.1, steps=3, restarts=2, loss_fn=neg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (nn.functional.cross_entropy(model(adv), y, reduction="none") < clean).all()
    # no steps: the random start alone, already a valid image in the ball
    start = A.pgd(model, x, y, 0.3, 0.1, steps=0, generator=torch.Generator().manual_seed(1))
    assert start.min() >= 0 and start.max() <= 1 and (start - x).abs().max() <= 0.3 + 1e-6
    assert not torch.equal(start, x)
    # eps = 1 is a step like any other
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(A.fgsm_from_grad(x, g, 1.0, "linf"), (x + g.sign()).clamp(0, 1))
    x64 = x.double()
    for norm in ("linf", "l2"):
        assert A.random_start(x64, 0.1, norm, torch.Generator()).dtype == torch.float64


def test_sweep_defaults_and_exact_zero_gradient_fraction() -> None:
    model, x, y = _digits_linear()
    x, y = x[:40], y[:40]
    specs = (AttackSpec("fgsm", "linf"),)
    auto = attack_sweep(model, x, y, (0.1,), (), specs)
    explicit = attack_sweep(model, x, y, (0.1,), (), specs, batch_size=40, seed=0, huge_eps=1.0)
    assert auto == explicit
    r = attack_sweep(Quantized(model).eval(), x, y, (0.1,), (), specs, batch_size=16, huge_eps=None)
    assert r["zero_grad_fraction"] == 1.0  # every image's gradient is exactly zero


def test_masking_warnings_boundaries_and_numeric_eps_order() -> None:
    from foveal.robustness.attacks import masking_warnings

    floor = 0.6 * 1.01 + 1e-4
    assert len(masking_warnings(_report(attack_loss={"pgd_linf": {"0.1": floor}}), 10)) == 1  # equal: no rise
    w = masking_warnings(_report(attacks={"fgsm_linf": {"0.1": 0.5}, "pgd_linf": {"0.1": 0.75}}), 10, tol=0.25)
    assert w == []  # weaker by exactly tol: tolerated
    w = masking_warnings(_report(attacks={"pgd_linf": {"0.5": 0.25, "1": 0.5}}), 10, tol=0.25)
    assert w == []
    w = masking_warnings(_report(attacks={"pgd_l2": {"2": 0.3, "10": 0.2}}), 10)  # "10" < "2" as text
    assert w == []
    w = masking_warnings(_report(attacks={"pgd_l2": {"2": 0.2, "10": 0.3}}), 10)
    assert w == ["pgd_l2: accuracy rises from 0.2000 at eps=2 to 0.3000 at eps=10"]
