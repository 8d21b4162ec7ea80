"""Training for robustness: adversarial examples and corruption-style augmentation per batch.

The trainer calls one :class:`Perturber` on each normalized batch before the forward pass
(`train.adv`, `train.corrupt_aug` in the config). It maps the batch back to [0, 1] pixels,
applies corruption augmentation and/or an attack there, and returns it normalized again,
so ε keeps its pixel meaning. Everything stays on the device with no host sync.

- `adv: pgd`: Madry et al. (2018): train on PGD (`adv_steps` steps of `adv_alpha`, random start).
- `adv: fgsm`: Wong et al. (2020) "fast is better than free": one FGSM step of `adv_alpha`
  from a uniform random start in the ε-ball, projected back.
- `adv_ramp_epochs`: ε (and α with it) grows linearly from 0 over these epochs, which keeps
  fast-FGSM training from collapsing early ("catastrophic overfitting").
- `corrupt_aug: noise|blur|augmix`: Gaussian noise, Gaussian blur, or an AugMix-like mix
  (Hendrycks et al. 2020) of short chains of noise/blur/contrast/brightness, on a random
  `corrupt_p` fraction of each batch.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..config import TrainConfig
from ..data.preprocess import Normalized
from .attacks import input_grad, pgd, random_start

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Perturber:
    """`perturber(model, x, y, progress) -> x'` for normalized x; `progress` is epochs done (float)."""

    def __init__(self, train: TrainConfig, mean: Sequence[float], std: Sequence[float], loss_fn: LossFn):
        """`train`: the config section whose adv* and corrupt* fields set the perturbation (see the module
        docstring); `mean`, `std`: the normalization of the batches; `loss_fn(logits, y)`: what attacks raise."""
        if train.adv not in ("none", "fgsm", "pgd"):
            raise ValueError(f"train.adv {train.adv!r} is not one of 'none', 'fgsm', 'pgd'")
        if train.corrupt_aug not in ("none", "noise", "blur", "augmix"):
            raise ValueError(f"train.corrupt_aug {train.corrupt_aug!r} is not one of 'none', 'noise', 'blur', 'augmix'")
        self.adv, self.eps, self.alpha, self.steps = train.adv, train.adv_eps, train.adv_alpha, train.adv_steps
        self.ramp, self.corrupt_aug, self.corrupt_p = train.adv_ramp_epochs, train.corrupt_aug, train.corrupt_p
        self.mean_list, self.std_list = list(mean), list(std)
        self.mean = torch.tensor(self.mean_list).view(1, -1, 1, 1)
        self.std = torch.tensor(self.std_list).view(1, -1, 1, 1)
        self.loss_fn = loss_fn
        self._net: Optional[Normalized] = None  # built once per model and device: no per-batch host traffic

    def __bool__(self) -> bool:
        return self.adv != "none" or self.corrupt_aug != "none"

    def eps_at(self, progress: float) -> float:
        return self.eps * min(1.0, progress / self.ramp) if self.ramp > 0 else self.eps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: float) -> torch.Tensor:
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        mean, std = self.mean, self.std
        px = x * std + mean  # (B, C, H, W) pixels in [0, 1]
        if self.corrupt_aug != "none":
            px = corrupt_augment(px, self.corrupt_aug, self.corrupt_p)
        if self.adv != "none":
            eps = self.eps_at(progress)
            alpha = self.alpha * eps / self.eps if self.eps > 0 else 0.0
            if self._net is None or self._net.model is not model or self._net.mean.device != x.device:
                self._net = Normalized(model, self.mean_list, self.std_list).to(x.device)
            net = self._net
            if self.adv == "fgsm":
                px = fast_fgsm(net, px, y, eps, alpha, self.loss_fn)
            else:
                px = pgd(net, px, y, eps, alpha, self.steps, "linf", loss_fn=self.loss_fn)
        return ((px - mean) / std).detach()


def fast_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
              loss_fn: Optional[LossFn] = None) -> torch.Tensor:
    """Wong et al. (2020): uniform start in the L-inf ε-ball, one signed step of α, project, clip."""
    delta = random_start(x, eps, "linf")
    g = input_grad(model, (x + delta).clamp(0, 1), y, loss_fn)
    delta = (delta + alpha * g.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 6) -> torch.Tensor:
    """Per-sample Gaussian blur of (B, C, H, W) with sigma (B,) in px, as one grouped conv pair.

    A fixed `radius` (px) avoids reading sigma on the host; 6 covers 3 sigma up to sigma = 2.
    """
    B, C, H, W = x.shape
    r = radius
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, 2r+1)
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), k.view(B * C, 1, 1, -1), groups=B * C)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(B * C, 1, -1, 1), groups=B * C)
    return y.view(B, C, H, W)


def _op(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """One random AugMix-style op per sample: 0 noise, 1 blur, 2 contrast, 3 brightness."""
    B = len(x)
    s = torch.rand(B, 1, 1, 1, device=x.device)
    noise = x + torch.randn_like(x) * 0.08 * s
    blur = gaussian_blur(x, 0.3 + 1.2 * s.flatten())
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (x - m) * (1 - 0.6 * s) + m
    bright = x + 0.3 * (2 * s - 1)
    outs = torch.stack([noise, blur, contrast, bright])  # (4, B, C, H, W)
    return outs[which, torch.arange(B, device=x.device)].clamp(0, 1)


def corrupt_augment(x: torch.Tensor, kind: str, p: float, width: int = 3, depth: int = 2) -> torch.Tensor:
    """Corrupt a random fraction `p` of the batch (pixels in [0, 1])."""
    B = len(x)
    s = torch.rand(B, 1, 1, 1, device=x.device)
    if kind == "noise":
        out = x + torch.randn_like(x) * 0.1 * s
    elif kind == "blur":
        out = gaussian_blur(x, 0.3 + 1.5 * s.flatten())
    else:  # augmix: Dirichlet mix of `width` chains of `depth` ops, then Beta(1, 1) mix with the original
        w = torch.distributions.Dirichlet(torch.ones(width, device=x.device)).sample((B,))  # (B, width)
        mix = torch.zeros_like(x)
        for j in range(width):
            c = x
            for _ in range(depth):
                c = _op(c, torch.randint(0, 4, (B,), device=x.device))
            mix = mix + w[:, j].view(B, 1, 1, 1) * c
        out = s * x + (1 - s) * mix
    keep = (torch.rand(B, 1, 1, 1, device=x.device) >= p)
    return torch.where(keep, x, out.clamp(0, 1))
