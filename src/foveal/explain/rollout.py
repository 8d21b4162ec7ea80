"""Attention rollout (Abnar and Zuidema 2020) for transformers and hybrids.

Attention modules are found by what they hold, not by architecture: any submodule with a
``qkv`` linear layer and ``num_heads`` (foveal's shared ``layers.Attention`` and timm's). The
attention matrices are recomputed from each module's input (the fused SDPA kernels never
materialize them). Rollout multiplies, over the last run of blocks that share the final token
count, the head-averaged attention mixed with the identity (the residual path):
A = prod_l norm(0.5 * attn_l + 0.5 * I). The map is the row of the first prefix token (the
class token) over the patch tokens, or, without prefix tokens, the attention each patch
receives averaged over all tokens; ``tokens_to_map`` lays it on the grid.
"""

from __future__ import annotations

import torch
from torch import nn

from .core import EXPLAINERS, normalize_maps, upsample


def attention_modules(model: nn.Module) -> list[nn.Module]:
    mods = [m for m in model.modules() if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads")]
    if not mods:
        raise ValueError(f"model {getattr(model, 'model_name', type(model).__name__)} has no attention layers; "
                         "attention rollout is for transformers and hybrids (use gradcam for CNNs)")
    return mods


def _attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) input tokens -> (B, N, N) head-averaged softmax(q k^T / sqrt(hs))."""
    B, N, D = x.shape
    h = module.num_heads
    q, k, _ = module.qkv(x).reshape(B, N, 3, h, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, hs) each
    if hasattr(module, "q_norm"):  # timm's optional qk-norm
        q, k = module.q_norm(q), module.k_norm(k)
    attn = torch.softmax((q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5, dim=-1)
    return attn.mean(1)


@EXPLAINERS.register("rollout")
@torch.no_grad()
def rollout(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-agnostic attention flow to the patches (`target` is accepted for a uniform API)."""
    mats: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, inp, out: mats.append(_attention(m, inp[0])))
             for m in attention_modules(model)]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    n = mats[-1].shape[-1]
    last_run = []
    for a in reversed(mats):  # the final stage: blocks with the last token count
        if a.shape[-1] != n:
            break
        last_run.insert(0, a)
    eye = torch.eye(n, device=x.device)
    flow = eye.expand(len(x), n, n)
    for a in last_run:
        a = 0.5 * a + 0.5 * eye
        flow = (a / a.sum(-1, keepdim=True)) @ flow  # (B, N, N)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    row = flow[:, 0] if prefix else flow.mean(1)  # (B, N): attention received per token
    grid = model.tokens_to_map(row[..., None], (x.shape[-2], x.shape[-1]))[:, 0]  # (B, h, w)
    return normalize_maps(upsample(grid, x.shape[-2:]))
