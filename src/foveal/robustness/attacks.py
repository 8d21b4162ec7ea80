"""FGSM and PGD (L-inf and L2) in pixel space, with a guard against gradient masking.

All attacks take images in [0, 1] pixel space and a model that expects pixels: wrap a
trained network in `foveal.data.preprocess.Normalized` so its normalization (the model card's
mean/std) runs inside the graph and epsilons keep their usual meaning (ε = 0.3 on MNIST is 0.3 of
the pixel range, whatever the normalization). Attacks are batched and keep every tensor on
the model's device; the only host syncs are the per-ε accuracy reads in :func:`attack_sweep`.

Why not torchattacks / ART / foolbox: each would add a large dependency for ~80 lines of
well-known code, and none reports the attack loss we need for the gradient-masking guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import draws as D
from .draws import Gen, ImageDraws

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Optional[LossFn]) -> torch.Tensor:
    logits = model(x)
    if loss_fn is not None:
        return loss_fn(logits, y)
    return F.cross_entropy(logits, y, reduction="none")  # (B,)


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Optional[LossFn] = None) -> torch.Tensor:
    """d(sum of losses)/dx, (B, C, H, W); parameters get no gradient."""
    x = x.detach().requires_grad_(True)
    loss = _per_sample_loss(model, x, y, loss_fn).sum()
    (g,) = torch.autograd.grad(loss, x)
    return g


def _l2_normalize(g: torch.Tensor) -> torch.Tensor:
    n = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
    return g / n


def _project(delta: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Nearest point of the ε-ball (per sample); `eps` may be a (B, 1, 1, 1) tensor."""
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, torch.as_tensor(eps)), -torch.as_tensor(eps))
    n = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.ndim - 1)))
    return delta * torch.clamp(torch.as_tensor(eps) / n.clamp_min(1e-12), max=1.0)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: Gen = None) -> torch.Tensor:
    """A uniform draw from the ε-ball (L-inf: per pixel; L2: uniform in the ball), as a delta."""
    if norm == "linf":
        u = D.rand(x.shape, generator, x.device, x.dtype)
        return (2 * u - 1) * eps
    d = D.randn(x.shape, generator, x.device, x.dtype)
    r = D.rand(len(x), generator, x.device, x.dtype) ** (1.0 / x[0].numel())
    return _l2_normalize(d) * (r * eps).view(-1, *([1] * (x.ndim - 1)))


def _step(g: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    return alpha * (g.sign() if norm == "linf" else _l2_normalize(g))


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
         loss_fn: Optional[LossFn] = None) -> torch.Tensor:
    """One gradient step of size ε (Goodfellow et al. 2015; the L2 form steps along g/|g|)."""
    _check_norm(norm)
    if eps == 0:  # the ball is the image itself: the same result without a gradient pass
        return x.clamp(0, 1).detach()
    return fgsm_from_grad(x, input_grad(model, x, y, loss_fn), eps, norm)


def fgsm_from_grad(x: torch.Tensor, g: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """FGSM's image from the input gradient `g` at `x`: one gradient serves every ε and both norms."""
    _check_norm(norm)
    if eps == 0:
        return x.clamp(0, 1).detach()
    return (x + _step(g, eps, norm)).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: Optional[float] = None,
        steps: int = 40, norm: str = "linf", rand_init: bool = True, restarts: int = 1,
        loss_fn: Optional[LossFn] = None, generator: Gen = None) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) from a random start in the ε-ball.

    `alpha` defaults to 2.5 ε / steps (Madry's rule). With several restarts each sample keeps
    the perturbation of highest loss, so more restarts never make the attack weaker.
    """
    _check_norm(norm)
    if eps == 0:  # every step projects back onto x: the same result without the gradient passes (random starts
        return x.clamp(0, 1).detach()  # are keyed per image and stream, so skipping these draws moves no other)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    best_x, best_loss = x.detach(), torch.full((len(x),), -float("inf"), device=x.device)
    for _ in range(max(restarts, 1)):
        delta = random_start(x, eps, norm, generator) if rand_init else torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).detach()
        for _ in range(steps):
            g = input_grad(model, x + delta, y, loss_fn)
            delta = _project(delta + _step(g, alpha, norm), eps, norm)
            delta = ((x + delta).clamp(0, 1) - x).detach()  # stay a valid image
        with torch.no_grad():
            adv = x + delta
            loss = _per_sample_loss(model, adv, y, loss_fn)
            wins = loss > best_loss  # (B,)
            best_x = torch.where(wins.view(-1, 1, 1, 1), adv, best_x)
            best_loss = torch.where(wins, loss, best_loss)
    return best_x.detach()


def _check_norm(norm: str) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"attack norm {norm!r} is not one of 'linf', 'l2'")


@dataclass
class AttackSpec:
    """One attack of a sweep: 'fgsm' or 'pgd', a norm, and PGD's steps / step size rule."""

    method: str = "pgd"
    norm: str = "linf"
    steps: int = 40
    alpha_ratio: float = 2.5  # PGD step size = alpha_ratio * eps / steps
    restarts: int = 1

    @property
    def name(self) -> str:
        return f"{self.method}_{self.norm}"

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
            generator: Gen = None) -> torch.Tensor:
        if self.method == "fgsm":
            return fgsm(model, x, y, eps, self.norm)
        if self.method == "pgd":
            return pgd(model, x, y, eps, self.alpha_ratio * eps / self.steps, self.steps, self.norm,
                       restarts=self.restarts, generator=generator)
        raise ValueError(f"attack method {self.method!r} is not one of 'fgsm', 'pgd'")


# ---- sweeps and the gradient-masking guard ---------------------------------------------------------

DEFAULT_ATTACKS = (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", 20), AttackSpec("fgsm", "l2"),
                   AttackSpec("pgd", "l2", 20))


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device):
    """(first index, images, labels) of each batch, moved to `device`."""
    for i in range(0, len(x), batch_size):
        yield i, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)


def _acc_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, 2): per image (correct, loss), on the device (no sync). Kept per image and summed once at
    the end, so the totals do not depend on how the images were batched."""
    with torch.no_grad():
        logits = model(x)
        return torch.stack([(logits.argmax(1) == y).float(), F.cross_entropy(logits, y, reduction="none")], 1)


def _mean(rows: list[torch.Tensor]) -> torch.Tensor:
    """(2,) mean (accuracy, loss) over the images of every batch's (B, 2) rows, in float64 (an
    accuracy reads as count / n, as a Python division gives it). On the host: MPS has no float64,
    and the caller reads the result right away (its one sync)."""
    return torch.cat(rows).cpu().double().mean(0)


def attack_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_linf: Sequence[float],
                 eps_l2: Sequence[float] = (), attacks: Sequence[AttackSpec] = DEFAULT_ATTACKS,
                 batch_size: int | str = "auto", seed: int = 0, huge_eps: Optional[float] = 1.0) -> dict:
    """Robust accuracy and mean attack loss per attack and ε, plus the masking guard's verdict.

    `model` takes pixels in [0, 1] (see `foveal.data.preprocess.Normalized`) and is put in eval mode; `x` are
    (N, C, H, W) pixels, `y` (N,) labels, on any device (batches move to the model's device).
    `batch_size` 'auto' is sized by memory (foveal.batching); the result does not depend on it,
    since every random start is drawn per image (foveal.robustness.draws).
    """
    from ..batching import resolve_batch_size

    model.eval()
    device = next(model.parameters()).device
    bs = resolve_batch_size(batch_size, model, tuple(x.shape[1:]), device, grad=True)

    def draws(stream: str, i: int, n: int) -> ImageDraws:
        return ImageDraws(seed, stream, range(i, i + n), device)

    def eps_of(spec: AttackSpec) -> Sequence[float]:
        return eps_linf if spec.norm == "linf" else eps_l2

    clean: list[torch.Tensor] = []
    noise: dict[float, list[torch.Tensor]] = {}  # eps -> rows under a random L-inf start: the baseline to beat
    fgsm_rows: dict[tuple[str, float], list[torch.Tensor]] = {}  # FGSM reuses the clean input gradient below
    zero_grad = torch.zeros((), device=device)
    for i, xb, yb in _batches(x, y, bs, device):
        clean.append(_acc_loss(model, xb, yb))
        g = input_grad(model, xb, yb)
        zero_grad += (g.flatten(1).abs().amax(1) == 0).sum()
        for e in eps_linf:
            noisy = (xb + random_start(xb, e, "linf", draws(f"noise:{e}", i, len(xb)))).clamp(0, 1)
            noise.setdefault(e, []).append(_acc_loss(model, noisy, yb))
        for spec in attacks:  # the very gradient `fgsm` would compute: one pass instead of one per (norm, ε)
            if spec.method == "fgsm":
                for e in eps_of(spec):
                    adv = fgsm_from_grad(xb, g, e, spec.norm)
                    fgsm_rows.setdefault((spec.name, e), []).append(_acc_loss(model, adv, yb))
    out_acc: dict[str, dict[str, float]] = {}
    out_loss: dict[str, dict[str, float]] = {}
    for spec in attacks:
        for e in eps_of(spec):
            rows = fgsm_rows.get((spec.name, e)) if spec.method == "fgsm" else None
            if rows is None:
                rows = [_acc_loss(model, spec.run(model, xb, yb, e, draws(f"{spec.name}:{e}", i, len(xb))), yb)
                        for i, xb, yb in _batches(x, y, bs, device)]
            acc, loss = _mean(rows).tolist()  # deliberate sync: one per (attack, ε)
            out_acc.setdefault(spec.name, {})[_key(e)] = acc
            out_loss.setdefault(spec.name, {})[_key(e)] = loss
    clean_acc, clean_loss = _mean(clean).tolist()
    result = {"clean_accuracy": clean_acc, "clean_loss": clean_loss, "n": len(x),
              "zero_grad_fraction": float(zero_grad) / len(x), "attacks": out_acc, "attack_loss": out_loss,
              "noise_loss": {_key(e): float(_mean(v)[1]) for e, v in noise.items()}}
    if huge_eps:
        rows = [_acc_loss(model, pgd(model, xb, yb, huge_eps, huge_eps / 4, 10, "linf",
                                     generator=draws("huge", i, len(xb))), yb)
                for i, xb, yb in _batches(x, y, bs, device)]
        result["huge_eps"] = {"eps": huge_eps, "accuracy": float(_mean(rows)[0])}
    result["warnings"] = masking_warnings(result, num_classes=_num_classes(model, x[:1].to(device)))
    result["suspect_gradient_masking"] = bool(result["warnings"])
    return result


def _num_classes(model: nn.Module, x1: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x1).shape[1])


def _key(e: float) -> str:
    return f"{e:g}"


def masking_warnings(r: dict, num_classes: int, tol: Optional[float] = None) -> list[str]:
    """The signs of gradient masking (Athalye et al. 2018; Carlini et al. 2019) found in a sweep.

    - the input gradient is exactly zero for many samples (shattered or saturated gradients);
    - an attack's loss does not rise above the clean loss and the loss of random noise of the
      same size (the attack learned nothing from the gradient);
    - PGD is weaker than FGSM at the same ε (iterating should never hurt the attacker);
    - accuracy rises with ε (a larger ball contains the smaller one);
    - accuracy stays high at a huge ε, where any image is reachable.
    `tol` (accuracy) defaults to max(1%, 2 samples).
    """
    n = r["n"]
    tol = max(0.01, 2.0 / n) if tol is None else tol
    w: list[str] = []
    if r["zero_grad_fraction"] > 0.5:
        w.append(f"input gradient is exactly zero for {r['zero_grad_fraction']:.0%} of samples: gradients are "
                 "masked (quantized, non-differentiable or saturated outputs); gradient attacks are not reliable")
    for name, losses in r["attack_loss"].items():
        for e, loss in losses.items():
            floor = max(r["clean_loss"], r["noise_loss"].get(e, -float("inf")))
            if float(e) > 0 and loss <= floor * 1.01 + 1e-4:
                w.append(f"{name} at eps={e}: attack loss {loss:.4g} does not rise above the clean/random-noise "
                         f"loss {floor:.4g}")
    for norm in ("linf", "l2"):
        fg, pg = r["attacks"].get(f"fgsm_{norm}", {}), r["attacks"].get(f"pgd_{norm}", {})
        for e in fg.keys() & pg.keys():
            if pg[e] > fg[e] + tol:
                w.append(f"pgd_{norm} at eps={e} is weaker than FGSM ({pg[e]:.4f} > {fg[e]:.4f} accuracy)")
    for name, accs in r["attacks"].items():
        items = sorted(accs.items(), key=lambda kv: float(kv[0]))
        for (e0, a0), (e1, a1) in zip(items, items[1:]):
            if a1 > a0 + tol:
                w.append(f"{name}: accuracy rises from {a0:.4f} at eps={e0} to {a1:.4f} at eps={e1}")
    huge = r.get("huge_eps")
    if huge and huge["accuracy"] > 1.0 / num_classes + 0.1:
        w.append(f"PGD at eps={huge['eps']:g} (any image reachable) leaves accuracy {huge['accuracy']:.4f}, "
                 f"far above chance {1.0 / num_classes:.3f}")
    return w
