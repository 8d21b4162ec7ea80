"""Evaluation passes over a loader, accumulating metrics on the device."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ..metrics import ConfusionMeter
from .device import autocast
from .tta import tta_logits


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device, amp: bool = False,
             keep_logits: bool = False, tta: Sequence[str] = (), num_groups: int = 0,
             ) -> tuple[ConfusionMeter, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Run `model` over `loader`; return the filled meter and, if asked, all logits (N, K) and their
    labels (N,) on the CPU. The labels are those the loader gave: a streamed file that fails to
    decode is dropped from its batch, so they can be fewer than the split's. `tta`: test-time views
    (foveal.engine.tta) whose logits are averaged.

    `amp` (bf16 autocast on CUDA) is off by default: a finished model is evaluated, calibrated and
    served in fp32 (`Predictor`, ONNX), so `eval` scores the very logits `predict` turns into
    probabilities. Only the trainer's per-epoch validation, which merely picks the best epoch, may
    turn it on for speed. `num_groups`: the loader yields (x, y, group ids) and the meter counts
    hits per group (its `worst_group_accuracy`)."""
    was_training = model.training
    model.eval()
    meter = ConfusionMeter(num_classes, device, num_groups=num_groups)
    kept, kept_y = [], []
    for x, y, *g in loader:
        with autocast(device, amp):
            logits = tta_logits(model, x, tta)
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        meter.update(logits, y, loss, g[0] if g else None)
        if keep_logits:
            kept.append(logits)
            kept_y.append(y)
    model.train(was_training)
    if not keep_logits:
        return meter, None, None
    return meter, torch.cat(kept).cpu(), torch.cat(kept_y).cpu()
