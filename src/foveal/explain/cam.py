"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) on the
model's ``cam_layer``: a CNN's last feature map, or a transformer's token grid.

Token features: the grid is the output of ``cam_layer`` (the last block). When the head reads
only prefix tokens (a ViT class token), that block's patch-token outputs never reach the
logits and their gradient is exactly zero; the map then uses the block's *input* tokens,
which the class token attends over in that block (the layer pytorch-grad-cam recommends for
ViTs). The choice is made from the gradients themselves, not from the architecture.

On those input tokens each token's gradient is its own (it reaches the class token through
one attention row, not through a shared spatial pooling), so the channel weights are taken
per token, cam_i = ReLU(sum_c g_ic a_ic), the gradient-times-feature weighting of Chefer et
al. (2021), instead of Grad-CAM's spatial mean; with the mean, the few most attended tokens
are drowned by the rest and the map is unstable from one training run to the next.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import EXPLAINERS, as_grid, cam_module, capture, normalize_maps, target_score, upsample


def cam_features(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(activations, gradients of the target logits), both (B, C, h, w) on the cam_layer grid, and
    whether they are the block-input tokens that take per-token weights (see the module doc)."""
    hw = (x.shape[-2], x.shape[-1])
    with torch.enable_grad(), capture(cam_module(model)) as seen:
        logits = model(x)
        out = seen["output"]
        wrt = [out] + ([seen["input"]] if out.ndim == 3 else [])
        grads = torch.autograd.grad(target_score(logits, target), wrt, allow_unused=True)
    act, grad, per_token = out, grads[0], False
    if out.ndim == 3:
        grid_grad = as_grid(model, grad if grad is not None else torch.zeros_like(out), hw)
        if not grid_grad.abs().amax() > 0:  # patch tokens unused by the head (see module doc); one sync
            act, grad, per_token = seen["input"], grads[1], True
    return as_grid(model, act.detach(), hw).float(), as_grid(model, grad.detach(), hw).float(), per_token


@EXPLAINERS.register("gradcam")
def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_c w_c A_c) with w_c the spatial mean of d score / d A_c (taken per token on a
    class-token transformer's block input, see the module doc)."""
    act, grad, per_token = cam_features(model, x, target)
    weights = grad if per_token else grad.mean(dim=(2, 3), keepdim=True)  # (B, C, h, w) or (B, C, 1, 1)
    cam = (weights * act).sum(1)  # (B, h, w)
    return normalize_maps(upsample(normalize_maps(cam), x.shape[-2:]))


@EXPLAINERS.register("gradcampp")
def gradcampp(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: pixel-wise weights alpha so several instances of a class all show up.

    With the exponential of the score, alpha = g^2 / (2 g^2 + sum_ij(A) g^3) (the closed form of
    the paper's eq. 19, as implemented by its authors and by pytorch-grad-cam).
    """
    act, grad, per_token = cam_features(model, x, target)
    g2, g3 = grad.pow(2), grad.pow(3)
    denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(denom))
    weights = alpha * grad.clamp_min(0)  # (B, C, h, w)
    if not per_token:
        weights = weights.sum(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = (weights * act).sum(1)
    return normalize_maps(upsample(normalize_maps(cam), x.shape[-2:]))
