"""Input-gradient maps: vanilla gradients (Simonyan et al. 2014), SmoothGrad (Smilkov et al.
2017) and integrated gradients (Sundararajan et al. 2017).

Each map is the per-pixel magnitude, reduced over channels (max |.| for gradients, as
Simonyan et al. do; |sum| of attributions for integrated gradients, which keeps the
completeness property per pixel). Noisy copies and path steps are batched together, in
chunks of at most `chunk` images so memory stays bounded.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import EXPLAINERS, normalize_maps, target_score


def input_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                    chunk: int | str = "auto") -> torch.Tensor:
    """d target logit / d x, (B, C, H, W), computed `chunk` images at a time ('auto': sized by
    memory, foveal.batching)."""
    from ..batching import resolve_batch_size

    chunk = resolve_batch_size(chunk, model, tuple(x.shape[1:]), x.device, grad=True)
    out = []
    for i in range(0, len(x), chunk):
        xi = x[i:i + chunk].detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(target_score(model(xi), target[i:i + chunk]), [xi])
        out.append(g.float())
    return torch.cat(out)


@EXPLAINERS.register("saliency")
def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """max over channels of |d score / d x|."""
    return normalize_maps(input_gradients(model, x, target).abs().amax(1))


@EXPLAINERS.register("smoothgrad")
def smoothgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, samples: int = 16,
               noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """Mean gradient over `samples` noisy copies; noise std = `noise` x (max - min) of each image."""
    g = torch.Generator(device="cpu").manual_seed(seed)  # fixed draws: the same call gives the same map
    B = len(x)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(B, 1, 1, 1)
    eps = torch.randn((samples, *x.shape), generator=g).to(x.device, x.dtype)  # (S, B, C, H, W)
    noisy = (x[None] + noise * span[None] * eps).flatten(0, 1)  # (S*B, C, H, W)
    grads = input_gradients(model, noisy, target.repeat(samples)).view(samples, *x.shape)
    return normalize_maps(grads.mean(0).abs().amax(1))


def ig_attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = 32,
                    baseline: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) signed attributions: (x - x0) * mean gradient along the straight path
    x0 -> x (midpoint Riemann sum). They sum to about f(x) - f(x0) for the target logit
    (completeness), closer as `steps` grows. `model` should be in eval mode (explain() sets it).

    The default baseline x0 is zeros in normalized space: the data set's mean image colour,
    the usual "no information" input for normalized models.
    """
    x0 = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps  # (S,)
    path = (x0[None] + alphas.view(-1, 1, 1, 1, 1) * (x - x0)[None]).flatten(0, 1)  # (S*B, C, H, W)
    grads = input_gradients(model, path, target.repeat(steps)).view(steps, *x.shape)
    return (x - x0) * grads.mean(0)  # (B, C, H, W)


@EXPLAINERS.register("ig")
def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = 32,
                         baseline: torch.Tensor | None = None) -> torch.Tensor:
    """|sum over channels| of the integrated-gradients attributions (`ig_attributions`)."""
    return normalize_maps(ig_attributions(model, x, target, steps, baseline).sum(1).abs())
