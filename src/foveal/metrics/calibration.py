"""Calibration: expected calibration error, reliability bins and temperature scaling.

Temperature scaling (Guo et al. 2017) divides logits by one scalar T fitted to minimize the
negative log-likelihood on the validation split; it changes confidence, never the argmax.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def reliability(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, temperature: float = 1.0) -> dict[str, Any]:
    """ECE and per-bin (confidence, accuracy, count) with equal-width confidence bins."""
    probs = torch.softmax(logits.float() / temperature, dim=1)
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf.double(), edges[1:-1], right=True)  # bin of each sample, (N,)
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.bincount(idx, weights=conf.double(), minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    nz = count > 0
    mean_conf = torch.where(nz, conf_sum / count.clamp_min(1), torch.zeros_like(count))
    mean_acc = torch.where(nz, acc_sum / count.clamp_min(1), torch.zeros_like(count))
    ece = ((mean_conf - mean_acc).abs() * count).sum() / max(1, len(labels))
    return {"ece": ece.item(), "bin_edges": edges.tolist(), "bin_confidence": mean_conf.tolist(),
            "bin_accuracy": mean_acc.tolist(), "bin_count": count.long().tolist()}


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, Any]:
    """ECE and reliability bins before and after dividing the logits by the fitted temperature:
    the `calibration` entry of the metrics of a run's test split and of `foveal eval`."""
    return {"temperature": temperature, "before": reliability(logits, labels),
            "after": reliability(logits, labels, 15, temperature)}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimizing NLL(logits / T) on held-out data (optimized as log T with L-BFGS)."""
    logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return t if 0.05 < t < 20 else 1.0  # an extreme T means too little data to trust it
