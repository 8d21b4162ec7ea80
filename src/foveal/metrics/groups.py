"""Per-group evaluation: how a model does for each site, scanner or patient group, not only on average.

A group is a string per image (`Split.groups`); `site=A|sex=F` holds two attributes, `site` and
`sex`, and a bare `A` is the value of one attribute named `group`. Metrics are reported for each
group (the intersection of its attributes) and for each value of each attribute, computed as
scikit-learn would on that subset of the predictions (checked against Fairlearn's `MetricFrame`
in tests/metrics/test_groups.py). For binary tasks the demographic-parity and equalized-odds
differences follow Fairlearn's definitions (between groups: max minus min; class index 1 positive).
Runs once after evaluation, on the host: nothing here is in the training step.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch

from .calibration import reliability
from .classification import report_from_confusion

ATTRIBUTE = "group"  # the attribute name of a group string without `key=value` parts


def parse_group(group: str) -> dict[str, str]:
    """'site=A|sex=F' -> {'site': 'A', 'sex': 'F'}; 'A' -> {'group': 'A'}; '' -> {}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in group.split("|")):
        if part:
            key, sep, value = part.partition("=")
            out[key.strip() if sep else ATTRIBUTE] = value.strip() if sep else part
    return out


def subset_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """n, accuracy, balanced accuracy, per-class recall, macro-F1 and ECE of one subset.

    Per-class recall lists the classes present in the subset; macro-F1 averages over the classes
    present in its labels or predictions, as scikit-learn's `f1_score(average='macro')` on the subset.
    """
    K = len(classes)
    pred = logits.argmax(1)
    cm = torch.bincount(labels * K + pred, minlength=K * K).view(K, K)
    r = report_from_confusion(cm, classes)
    seen = (cm.sum(0) + cm.sum(1)) > 0
    f1 = torch.tensor([r["per_class"][c]["f1"] for c in classes], dtype=torch.float64)
    return {"n": len(labels), "accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
            "macro_f1": f1[seen].mean().item(),
            "recall": {c: r["per_class"][c]["recall"] for c in classes if r["per_class"][c]["support"]},
            "ece": reliability(logits, labels)["ece"]}


def _binary_gaps(pred: torch.Tensor, labels: torch.Tensor, keys: list[Optional[str]]) -> dict[str, float]:
    """Fairlearn's demographic_parity_difference and equalized_odds_difference (between groups)."""
    sel, tpr, fpr = [], [], []
    for k in sorted({k for k in keys if k is not None}):
        m = torch.tensor([x == k for x in keys])
        p, y = pred[m] == 1, labels[m] == 1
        sel.append(p.double().mean().item())
        tpr.append((p & y).sum().item() / y.sum().item() if y.any() else 0.0)  # Fairlearn: 0 without positives
        fpr.append((p & ~y).sum().item() / (~y).sum().item() if (~y).any() else 0.0)

    def spread(v: list[float]) -> float:
        return max(v) - min(v) if v else float("nan")

    return {"demographic_parity_difference": spread(sel),
            "equalized_odds_difference": max(spread(tpr), spread(fpr))}


def group_report(logits: torch.Tensor, labels: torch.Tensor, groups: list[str], classes: list[str],
                 train_groups: Optional[Iterable[str]] = None) -> dict[str, Any]:
    """Metrics per group and per attribute value, the worst group and the largest accuracy gap.

    logits (N, K), labels (N,) int64, groups: N strings. Groups absent from `train_groups` (when
    given) are marked `"in_training": false`: reported like the others, since a test group that
    training never saw is exactly what a user needs to see. Keys: groups, attributes,
    worst_group, worst_group_accuracy, accuracy_gap, and for two classes `fairness`.
    """
    logits, labels = logits.detach().float().cpu(), labels.detach().cpu()
    if len(groups) != len(labels):
        raise ValueError(f"group_report: {len(groups)} groups for {len(labels)} predictions")
    names = sorted(set(groups))
    rows = {g: torch.tensor([x == g for x in groups]) for g in names}
    seen = set(train_groups) if train_groups is not None else None
    per_group = {}
    for g in names:
        per_group[g] = subset_metrics(logits[rows[g]], labels[rows[g]], classes)
        if seen is not None:
            per_group[g]["in_training"] = g in seen
    parsed = {g: parse_group(g) for g in names}
    attributes: dict[str, dict[str, Any]] = {}
    for attr in sorted({a for p in parsed.values() for a in p}):
        keys = [parsed[g].get(attr) for g in groups]
        attributes[attr] = {v: subset_metrics(logits[m], labels[m], classes)
                            for v in sorted({k for k in keys if k is not None})
                            for m in [torch.tensor([k == v for k in keys])]}
    acc = {g: r["accuracy"] for g, r in per_group.items()}
    worst = min(acc, key=acc.get)
    out = {"groups": per_group, "attributes": attributes, "worst_group": worst,
           "worst_group_accuracy": acc[worst], "accuracy_gap": max(acc.values()) - acc[worst]}
    if len(classes) == 2:
        pred = logits.argmax(1)
        out["fairness"] = {"group": _binary_gaps(pred, labels, list(groups)),
                           **{a: _binary_gaps(pred, labels, [parsed[g].get(a) for g in groups]) for a in attributes}}
    return out


def format_groups(m: dict[str, Any]) -> str:
    """A per-group table (n, accuracy, balanced accuracy, macro-F1, ECE) for the log."""
    width = max(12, max(len(g) for g in m["groups"]) + 2)
    lines = [f"{'group':<{width}} {'n':>7} {'acc':>7} {'bal_acc':>7} {'f1':>7} {'ece':>7}"]
    for g, r in m["groups"].items():
        mark = "" if r.get("in_training", True) else "  (not in training)"
        lines.append(f"{g:<{width}} {r['n']:7d} {r['accuracy']:7.4f} {r['balanced_accuracy']:7.4f} "
                     f"{r['macro_f1']:7.4f} {r['ece']:7.4f}{mark}")
    lines.append(f"worst group {m['worst_group']} accuracy {m['worst_group_accuracy']:.4f}; "
                 f"largest gap {m['accuracy_gap']:.4f}")
    return "\n".join(lines)


def add_group_metrics(metrics: dict[str, Any], logits: torch.Tensor, labels: torch.Tensor,
                      groups: Optional[list[str]], classes: list[str],
                      train_groups: Optional[Iterable[str]] = None) -> Optional[str]:
    """Add `group_report` to `metrics` when the evaluated split has groups; return its log table.

    The one hook shared by the trainer's test evaluation and `foveal eval`. Skipped (None) without
    groups, or when some images could not be decoded, since groups then no longer pair with logits.
    """
    if groups is None:
        return None
    if len(groups) != len(labels):
        metrics["groups_skipped"] = f"{len(groups) - len(labels)} images could not be decoded"
        return None
    metrics.update(group_report(logits, labels, groups, classes, train_groups))
    return format_groups(metrics)
