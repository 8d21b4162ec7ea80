"""Losses: cross-entropy (with label smoothing and soft targets) and focal loss."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import OptimConfig


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): CE scaled by (1 - p_t)^gamma to focus on hard examples.

    Accepts int labels (B,) or soft targets (B, K); `weight` are per-class alphas.
    """

    def __init__(self, gamma: float = 2.0, weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, K)
        K = logits.shape[-1]
        if target.ndim == 1:
            target = F.one_hot(target, K).to(logp.dtype)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / K
        focal = (1 - logp.exp()).pow(self.gamma)  # (B, K)
        loss = -(target * focal * logp)
        if self.weight is not None:
            loss = loss * self.weight
        return loss.sum(-1).mean()


class GroupDROLoss(nn.Module):
    """Online Group DRO (Sagawa et al. 2020, Algorithm 1): minimize the q-weighted sum of the
    per-group mean losses, q moved each step towards the groups with the highest loss.

    forward(logits (B, K), target (B,) or (B, K) soft, groups (B,) int64 ids in [0, num_groups)).
    q lives on the device and is updated with detached losses: no host sync per step. Called
    without `groups` (e.g. by the adversarial perturber), it is the plain mean cross-entropy.
    Under DDP the per-group loss sums and counts are all-reduced (one small collective per step), so
    every rank moves q by the global batch's group losses, and each rank's loss is scaled so that
    DDP's gradient average equals the single-process gradient of the global batch.
    """

    def __init__(self, num_groups: int, step: float = 0.01, weight: Optional[torch.Tensor] = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.num_groups, self.step = num_groups, step
        self.ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing, reduction="none")
        self.register_buffer("q", torch.full((num_groups,), 1.0 / num_groups))  # (G,) group weights, sum 1

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                groups: Optional[torch.Tensor] = None) -> torch.Tensor:
        losses = self.ce(logits.float(), target)  # (B,)
        if groups is None:
            return losses.mean()
        G = self.num_groups
        if self.q.device != losses.device:
            self.q = self.q.to(losses.device)
        total = torch.zeros(G, device=losses.device).index_add_(0, groups, losses)  # (G,) this rank's sums
        count = torch.zeros(G, device=losses.device).index_add_(0, groups, torch.ones_like(losses))
        stats, world = torch.stack([total.detach(), count]), 1  # (2, G)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                torch.distributed.all_reduce(stats)  # the global batch's per-group sums and counts
        n = stats[1].clamp_min(1)
        with torch.no_grad():  # 0 for groups absent from the batch: their q only renormalizes
            q = self.q * torch.exp(self.step * stats[0] / n)
            self.q.copy_(q / q.sum())
        return (total / n * world) @ self.q


def build_loss(cfg: OptimConfig, class_weights: Optional[torch.Tensor] = None, num_groups: int = 0) -> nn.Module:
    """The training criterion named by `cfg.loss`, with optional per-class weights.

    `num_groups`: the train split's group count, for Group DRO (`GroupDROLoss`)."""
    if cfg.loss == "group_dro":
        if num_groups < 1:
            raise ValueError("optim.loss=group_dro needs groups in the train split (a CSV 'group' column or a "
                             "dataset with groups such as colored-mnist)")
        return GroupDROLoss(num_groups, cfg.dro_step, class_weights, cfg.label_smoothing)
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma, class_weights, cfg.label_smoothing)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class weights n / (K * n_c), mean 1 over samples (sklearn's 'balanced')."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1)
    return len(labels) / (num_classes * counts)
