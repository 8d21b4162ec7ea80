"""Optimizers with decay-free norms and biases, and step-indexed learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import OptimConfig


def decayed_params(model: nn.Module) -> dict[str, bool]:
    """Whether weight decay applies to each named parameter: not to 1-D ones (norm scales, biases)
    nor to the names a model lists in `no_weight_decay()` (embeddings, tokens)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {name: not (p.ndim <= 1 or name in skip) for name, p in model.named_parameters()}


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups of the trainable parameters: decayed, and not (see `decayed_params`)."""
    decayed = decayed_params(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decayed[name] else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW over `groups` (default: decay/no-decay groups of `model`)."""
    groups = groups or decay_groups(model, cfg.weight_decay)
    groups = [g for g in groups if g["params"]]
    on_cuda = next(model.parameters()).is_cuda
    fast = {"fused": True} if on_cuda else {"foreach": True}  # one kernel for all params on CUDA
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **fast)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=(cfg.momentum, cfg.beta2), **fast)


def lr_factor(step: int, total: int, warmup: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at optimizer step `step` of `total`.

    Written as a pure function of the step (rather than torch's stateful schedulers) so a
    resumed run only needs the step count, and one code path serves every schedule.
    """
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0 if step >= warmup else (step + 1) / warmup
    if cfg.schedule == "onecycle":  # Smith & Topin 2019: cosine up over 30% of steps, then cosine down
        up = max(1, int(0.3 * total))
        start = 1 / 25
        if step < up:
            return start + (1 - start) * (1 - math.cos(math.pi * step / up)) / 2
        t = min(1.0, (step - up) / max(1, total - up))
        return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2
    if step < warmup:  # cosine with linear warm-up
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2


class Schedule:
    """Sets every param group's lr to its base lr times `lr_factor(step)`."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int, steps_per_epoch: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.total = total_steps
        self.warmup = int(round(cfg.warmup_epochs * steps_per_epoch)) if cfg.schedule != "onecycle" else 0
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])
        self.scale = 1.0  # a stage's multiplier on top of the schedule (the 'staged' fine-tune sets it)

    def set_step(self, step: int) -> float:
        f = lr_factor(step, self.total, self.warmup, self.cfg) * self.scale
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.optimizer.param_groups[0]["lr"]
