"""Classification metrics from an on-device confusion matrix.

Every metric here derives from one (K, K) count matrix plus loss and top-k sums, which
makes the state a few tensors that accumulate without host syncs and reduce across
processes with one all-reduce. (torchmetrics keeps one state per metric; we need the
matrix anyway for the report, so deriving everything from it is simpler and exact.)
Definitions follow scikit-learn's `classification_report` (zero_division=0).
"""

from __future__ import annotations

from typing import Any, Optional

import torch


class ConfusionMeter:
    """Accumulates a (K, K) confusion matrix (rows: true, cols: predicted), loss and top-k hits; with
    `num_groups`, also hits and counts per group (what `train.best_metric worst_group_accuracy` selects on)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", topk: int = 5, num_groups: int = 0):
        self.num_classes = num_classes
        self.topk = topk if num_classes >= topk else 0
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, samples, top-k hits
        self.groups = torch.zeros(num_groups, 2, dtype=torch.int64, device=device)  # (G, [hits, n])

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor, loss_sum: Optional[torch.Tensor] = None,
               groups: Optional[torch.Tensor] = None) -> None:
        """logits (B, K); target (B,) int or (B, K) soft (argmax is taken); loss_sum: summed over the batch;
        groups: (B,) group ids in [0, num_groups)."""
        if target.ndim == 2:
            target = target.argmax(1)
        K = self.num_classes
        pred = logits.argmax(1)
        # index_add_ rather than bincount: CUDA's bincount reads the max index back to the host
        # (a sync every step); integer atomics are exact, so this stays deterministic.
        self.cm.view(-1).index_add_(0, target * K + pred, torch.ones_like(pred))
        self.sums[1] += target.numel()
        if loss_sum is not None:
            self.sums[0] += loss_sum.detach().double()
        if self.topk:
            top = logits.topk(self.topk, dim=1).indices  # (B, k)
            self.sums[2] += (top == target[:, None]).any(1).sum()
        if groups is not None and len(self.groups):
            hit = torch.stack([(pred == target).long(), torch.ones_like(pred)], 1)  # (B, 2)
            self.groups.index_add_(0, groups, hit)

    def state(self) -> list[torch.Tensor]:
        """Tensors to all-reduce (sum) across processes."""
        return [self.cm, self.sums] + ([self.groups] if len(self.groups) else [])

    def compute(self, classes: Optional[list[str]] = None) -> dict[str, Any]:
        """Host-side metrics (one device->host copy)."""
        cm = self.cm.cpu()
        loss_sum, n, topk_hits = self.sums.cpu().tolist()
        out = report_from_confusion(cm, classes)
        out["loss"] = loss_sum / n if n else float("nan")
        if self.topk:
            out[f"top{self.topk}"] = topk_hits / n if n else float("nan")
        if len(self.groups):  # groups with no image in this split are left out of the minimum
            acc = [h / c for h, c in self.groups.cpu().tolist() if c]
            out["worst_group_accuracy"] = min(acc) if acc else float("nan")
        return out


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp_min(1e-12), torch.zeros_like(a))


def report_from_confusion(cm: torch.Tensor, classes: Optional[list[str]] = None) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class and macro/weighted precision, recall, F1."""
    cm = cm.double()
    K = cm.shape[0]
    classes = classes or [str(i) for i in range(K)]
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    present = support > 0
    w = support / total if total > 0 else support
    per_class = {
        c: {"precision": precision[i].item(), "recall": recall[i].item(), "f1": f1[i].item(),
            "support": int(support[i].item())}
        for i, c in enumerate(classes)
    }
    return {
        "accuracy": (tp.sum() / total).item() if total > 0 else float("nan"),
        "balanced_accuracy": recall[present].mean().item() if present.any() else float("nan"),
        "macro_precision": precision.mean().item(),
        "macro_recall": recall.mean().item(),
        "macro_f1": f1.mean().item(),
        "weighted_precision": (precision * w).sum().item(),
        "weighted_recall": (recall * w).sum().item(),
        "weighted_f1": (f1 * w).sum().item(),
        "support": int(total.item()),
        "per_class": per_class,
        "confusion_matrix": cm.long().tolist(),
        "classes": list(classes),
    }


def format_report(m: dict[str, Any]) -> str:
    """A classification report table, as scikit-learn prints it, plus top-k."""
    classes = m["classes"]
    width = max(12, max(len(c) for c in classes) + 2)
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}"]
    for c in classes:
        r = m["per_class"][c]
        lines.append(f"{c:>{width}} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1']:9.4f} {r['support']:9d}")
    lines.append("")
    for avg in ("macro", "weighted"):
        lines.append(f"{avg + ' avg':>{width}} {m[avg + '_precision']:9.4f} {m[avg + '_recall']:9.4f} "
                     f"{m[avg + '_f1']:9.4f} {m['support']:9d}")
    extra = f"accuracy {m['accuracy']:.4f}   balanced accuracy {m['balanced_accuracy']:.4f}"
    if "top5" in m:
        extra += f"   top-5 {m['top5']:.4f}"
    if "loss" in m:
        extra += f"   loss {m['loss']:.4f}"
    return "\n".join(lines + ["", extra])
