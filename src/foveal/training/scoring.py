"""Scoring passes over a loader: a model's logits for every batch, metrics accumulated on the device.

`score` fills a ConfusionMeter; `score_with_logits` also keeps every logit and label, for the
calibration, the report and per-group metrics. Each has one return type.

`amp` (bf16 autocast on CUDA) is off by default: a finished model is evaluated, calibrated and
served in fp32 (`Predictor`, ONNX), so `eval` scores the very logits `predict` turns into
probabilities. Only the trainer's per-epoch validation, which merely picks the best epoch, may
turn it on for speed. Each pass runs a copy of the model with its batch norms folded into the convs
before them (models/fold_bn.py: a third of a convnet's CPU forward), checked against the model on
the first batch; the logits are the model's to fp32 rounding.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import torch
from torch import nn

from ..metrics import ConfusionMeter
from ..models.fold_bn import fold_batchnorm
from ..runtime.device import autocast
from .tta import tta_logits


class Scores(NamedTuple):
    meter: ConfusionMeter
    logits: torch.Tensor  # (N, K) float32 on the CPU, in the loader's order
    labels: torch.Tensor  # (N,) the labels the loader gave; fewer than the split's when streamed files failed to decode


@torch.no_grad()
def _run(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device, amp: bool,
         tta: Sequence[str], keep: bool, num_groups: int = 0
         ) -> tuple[ConfusionMeter, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The pass itself, in eval mode: the filled meter and, with `keep`, each batch's (logits, labels).
    `num_groups`: the loader yields (x, y, group ids) and the meter counts hits per group."""
    was_training = model.training
    model.eval()
    meter = ConfusionMeter(num_classes, device, num_groups=num_groups)
    kept = []
    net = None
    try:
        for x, y, *g in loader:
            if net is None:  # batch norm folded into its convs, checked on this batch (models/fold_bn.py)
                net = fold_batchnorm(model, x[:2])
            with autocast(device, amp):
                logits = tta_logits(net, x, tta)  # `tta`: test-time views whose logits are averaged
            logits = logits.float()
            meter.update(logits, y, nn.functional.cross_entropy(logits, y, reduction="sum"), g[0] if g else None)
            if keep:
                kept.append((logits, y))
    finally:
        model.train(was_training)
    return meter, kept


def score(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device, amp: bool = False,
          tta: Sequence[str] = (), num_groups: int = 0) -> ConfusionMeter:
    """Run `model` over `loader`; the meter filled with every batch's predictions and loss (and, with
    `num_groups`, hits per group: the loader then yields group ids, the meter's `worst_group_accuracy`)."""
    return _run(model, loader, num_classes, device, amp, tta, keep=False, num_groups=num_groups)[0]


def score_with_logits(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device,
                      amp: bool = False, tta: Sequence[str] = (), num_groups: int = 0) -> Scores:
    """As `score`, keeping all logits (N, K) and their labels (N,) on the CPU."""
    meter, kept = _run(model, loader, num_classes, device, amp, tta, keep=True, num_groups=num_groups)
    if not kept:
        return Scores(meter, torch.zeros(0, num_classes), torch.zeros(0, dtype=torch.long))
    return Scores(meter, torch.cat([lg for lg, _ in kept]).cpu(), torch.cat([y for _, y in kept]).cpu())
