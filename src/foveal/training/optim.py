"""The one optimizer builder and the one learning-rate schedule of every training loop.

`build_optimizer` takes parameter groups from `param_groups`, whose options give the trainer's
decayed/exempt split, AdamW's decay-everything default (the label check's folds) and the fast
recipe's scaled BN shifts and separate whitening bias. `Schedule` sets each group's lr from a
`Shape`, a pure function of the optimizer step: the trainer's cosine, constant and one-cycle, the
fast recipe's triangle, torch's OneCycleLR as the label check's folds use it, and the LR finder's
exponential sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..config import OptimConfig


def decayed_params(model: nn.Module) -> dict[str, bool]:
    """Whether weight decay applies to each named parameter: not to 1-D ones (norm scales, biases)
    nor to the names a model lists in `no_weight_decay()` (embeddings, tokens)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {name: not (p.ndim <= 1 or name in skip) for name, p in model.named_parameters()}


def param_groups(model: nn.Module, weight_decay: float, *, exempt: bool = True, lr: Optional[float] = None,
                 bias_lr_scale: float = 1.0, apart: Sequence[nn.Parameter] = ()) -> list[dict]:
    """Optimizer groups of `model`'s trainable parameters, in this order: the decayed ones, the others, then
    `apart` in a group of its own (the fast recipe's whitening bias, whose lr the schedule stops early).

    `exempt` (the trainer): 1-D parameters (norms, biases) and `no_weight_decay()` names form the second group,
    at weight decay 0 (`decayed_params`). `exempt=False`: every parameter is decayed (AdamW's own default, the
    label check's folds); the second group holds the 1-D ones.
    `lr` (the fast recipe's units): each group carries its lr, 1-D and `apart` parameters at lr * `bias_lr_scale`,
    and its weight decay as weight_decay / its lr: SGD multiplies the decay by the lr, so the decay per step
    stays `weight_decay` whatever the lr (decoupled, as in AdamW). Empty groups are left out.
    """
    apart_ids = {id(p) for p in apart}
    decayed = decayed_params(model)
    main: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in apart_ids:
            (main if (decayed[name] if exempt else p.ndim > 1) else other).append(p)
    groups = [{"params": main, "weight_decay": weight_decay},
              {"params": other, "weight_decay": 0.0 if exempt else weight_decay},
              {"params": list(apart), "weight_decay": 0.0 if exempt else weight_decay}]
    if lr is not None:
        for g, group_lr in zip(groups, (lr, lr * bias_lr_scale, lr * bias_lr_scale)):
            g.update(lr=group_lr, weight_decay=g["weight_decay"] / group_lr)
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW over `groups` (default: `param_groups(model, cfg.weight_decay)`); a group
    without its own lr gets cfg.lr."""
    groups = [g for g in (groups or param_groups(model, cfg.weight_decay)) if g["params"]]
    on_cuda = next(model.parameters()).is_cuda
    fast = {"fused": True} if on_cuda else {"foreach": True}  # one kernel for all params on CUDA
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **fast)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=(cfg.momentum, cfg.beta2), **fast)


def _cos(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct 0) to `end` (pct 1), in the arithmetic of torch's OneCycleLR."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


@dataclass(frozen=True)
class Shape:
    """A learning-rate curve over `total` optimizer steps, as multiples of each group's base lr (its peak).

    'cosine': linear warm-up over `warmup` steps, then cosine from 1 down to `end`; 'constant': the warm-up,
    then 1; 'onecycle' (Smith & Topin 2019): cosine from `start` up to 1 at `peak_at` of the steps, then down
    to `end`; 'triangle' (the speedruns'): the same, linear; 'exponential' (the LR finder's sweep): from
    `start` at step 0 to `end` at step total - 1, geometrically. A pure function of the step (no scheduler state),
    so a resumed run needs only its step count.

    `as_torch`: 'onecycle' computed as torch's OneCycleLR does with anneal_strategy='cos' (the label check's
    folds): the lrs themselves interpolated between base * start, base and base * end, the phases ending at
    steps peak_at * total - 1 and total - 1, and with `momentum` (high, low) the momentum (Adam's beta1)
    annealed from high to low at the peak and back. Exact for every lr whose base * start and base * end
    equal torch's base / div_factor and base / div_factor / final_div_factor (4e-3, the folds' lr, does).
    """

    kind: Literal["cosine", "constant", "onecycle", "triangle", "exponential"]
    total: int
    warmup: int = 0  # steps of linear warm-up ('cosine', 'constant')
    start: float = 1 / 25  # first lr / peak lr ('onecycle', 'triangle')
    peak_at: float = 0.3  # fraction of the steps at which the lr peaks ('onecycle', 'triangle')
    end: float = 0.01  # last lr / peak lr
    as_torch: bool = False
    momentum: Optional[tuple[float, float]] = None  # with as_torch: (at the ends, at the peak)

    @classmethod
    def from_config(cls, cfg: OptimConfig, total: int, steps_per_epoch: int) -> "Shape":
        """The trainer's shape: `optim.schedule` over `total` steps, warm-up in epochs, floor `min_lr_ratio`."""
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch)) if cfg.schedule != "onecycle" else 0
        return cls(cfg.schedule, total, warmup=warmup, end=cfg.min_lr_ratio)

    def factor(self, step: int) -> float:
        """The lr multiplier at optimizer step `step` (not for `as_torch`, which interpolates lrs)."""
        total, warmup = self.total, self.warmup
        if self.kind == "exponential":  # start * ratio**step, ratio the step's factor
            return self.start * ((self.end / self.start) ** (1 / max(1, total - 1))) ** step
        if self.kind == "triangle":
            return float(np.interp(step, [0, int(self.peak_at * total), total], [self.start, 1.0, self.end]))
        if self.kind == "onecycle":
            up = max(1, int(self.peak_at * total))
            if step < up:
                return self.start + (1 - self.start) * (1 - math.cos(math.pi * step / up)) / 2
            return _cos(1.0, self.end, min(1.0, (step - up) / max(1, total - up)))
        if step < warmup:
            return (step + 1) / warmup
        if self.kind == "constant":
            return 1.0
        return _cos(1.0, self.end, min(1.0, (step - warmup) / max(1, total - warmup)))

    def torch_onecycle(self, step: int, base: float) -> tuple[float, Optional[float]]:
        """(lr, momentum or None) at `step` for a group of peak lr `base`, as torch's OneCycleLR gives them."""
        first, last = base * self.start, base * self.end
        high, low = self.momentum or (0.0, 0.0)
        peak = float(self.peak_at * self.total) - 1
        if step <= peak:
            lr, m = _cos(first, base, step / peak), _cos(high, low, step / peak)
        else:
            pct = (step - peak) / (self.total - 1 - peak)
            lr, m = _cos(base, last, pct), _cos(low, high, pct)
        return lr, (m if self.momentum else None)


class Schedule:
    """Sets every param group's lr to what `shape` gives for its base lr (its lr when the schedule was made),
    times `scale`; a group with an "lr_until" step trains until then and has lr 0 after (the fast recipe's
    whitening bias). `base_lr`: every group's base lr instead (1.0: the shape's factors are the lrs, as the
    LR finder sweeps them)."""

    def __init__(self, optimizer: torch.optim.Optimizer, shape: Shape, base_lr: Optional[float] = None):
        self.optimizer = optimizer
        self.shape = shape
        for g in optimizer.param_groups:
            if base_lr is not None:
                g["base_lr"] = base_lr
            g.setdefault("base_lr", g["lr"])
        self.scale = 1.0  # a stage's multiplier on top of the schedule (the 'staged' fine-tune sets it)

    def set_step(self, step: int) -> float:
        f = None if self.shape.as_torch else self.shape.factor(step) * self.scale
        for g in self.optimizer.param_groups:
            if f is None:
                lr, momentum = self.shape.torch_onecycle(step, g["base_lr"])
                lr *= self.scale
                if momentum is not None:
                    _set_momentum(g, momentum)
            else:
                lr = g["base_lr"] * f
            g["lr"] = lr if step < g.get("lr_until", step + 1) else 0.0
        return self.optimizer.param_groups[0]["lr"]


def _set_momentum(group: dict, momentum: float) -> None:
    """SGD's momentum, or Adam's beta1."""
    if "betas" in group:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum
