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


def build_loss(cfg: OptimConfig, class_weights: Optional[torch.Tensor] = None) -> nn.Module:
    """The training criterion named by `cfg.loss`, with optional per-class weights."""
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma, class_weights, cfg.label_smoothing)
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)


def inverse_frequency_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class weights n / (K * n_c), mean 1 over samples (sklearn's 'balanced')."""
    counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1)
    return len(labels) / (num_classes * counts)
