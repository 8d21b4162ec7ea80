"""What every explainer shares: the explainer registry, the target class, hooks on
``cam_layer``, and turning a feature (map or tokens) into a (B, C, h, w) grid.

Explainers take a *normalized* (B, C, H, W) batch (what the model sees) and return
(B, H, W) maps scaled to [0, 1] per image (1 = most important). They run batched: the
model is in eval mode (no dropout, frozen BatchNorm), so each image's logits depend on
that image alone and the gradient of the summed target logits gives every image's own
gradient in one backward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import Registry

Explainer = Callable[..., torch.Tensor]
EXPLAINERS: Registry[Explainer] = Registry("explainer")


def targets_of(model: nn.Module, x: torch.Tensor, target: Optional[torch.Tensor | int]) -> torch.Tensor:
    """(B,) class indices: given ones (an int applies to all), else the model's predictions."""
    if target is None:
        with torch.no_grad():
            return model(x).argmax(1)
    if isinstance(target, int):
        return torch.full((len(x),), target, dtype=torch.long, device=x.device)
    return target.to(x.device).long()


def target_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's target logit (its gradient is per image, see above)."""
    return logits.gather(1, target[:, None]).sum()


def normalize_maps(m: torch.Tensor) -> torch.Tensor:
    """(B, h, w) non-negative maps -> [0, 1] per image (an all-zero map stays zero)."""
    m = m.clamp_min(0)
    peak = m.flatten(1).amax(1).clamp_min(1e-12)
    return m / peak[:, None, None]


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear (as Grad-CAM's authors do)."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def cam_module(model: nn.Module) -> nn.Module:
    """The module named by the model's ``cam_layer`` (clear error when a model lacks one)."""
    name = getattr(model, "cam_layer", "")
    if not name:
        raise ValueError(f"model {type(model).__name__} declares no cam_layer; Grad-CAM needs the name of its "
                         "last feature map (see foveal.models.base)")
    return model.get_submodule(name)


@contextmanager
def capture(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Records the module's first input and its output (tensors still in the autograd graph)."""
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["input"], seen["output"] = inputs[0], output

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def as_grid(model: nn.Module, feat: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """A CNN map (B, C, h, w) as is; transformer tokens (B, N, D) via the model's ``tokens_to_map``."""
    if feat.ndim == 4:
        return feat
    if feat.ndim == 3 and hasattr(model, "tokens_to_map"):
        return model.tokens_to_map(feat, image_hw)
    raise ValueError(f"cam_layer output has shape {tuple(feat.shape)}; expected (B, C, h, w) or (B, N, D) tokens")


def explain(model: nn.Module, x: torch.Tensor, method: str = "gradcam", target: Optional[torch.Tensor | int] = None,
            **kw) -> torch.Tensor:
    """(B, H, W) maps in [0, 1] of `method` (a name in EXPLAINERS) for the target classes
    (default: the predicted ones). `x` is the normalized batch the model takes."""
    fn = EXPLAINERS.get(method)
    was_training = model.training
    model.eval()
    try:
        t = targets_of(model, x, target)
        return fn(model, x.detach(), t, **kw).detach()
    finally:
        model.train(was_training)
