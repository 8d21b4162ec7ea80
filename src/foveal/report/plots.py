"""Matplotlib figures of a run, returned as PNG bytes (embedded in the report, saved beside it)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to memory
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def learning_curves(history: list[dict[str, Any]]) -> bytes:
    """Loss, accuracy and learning rate per epoch."""
    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(ep, [r["train_loss"] for r in history], label="train")
    axes[0].plot(ep, [r["val_loss"] for r in history], label="val")
    axes[0].set_title("loss")
    axes[1].plot(ep, [r["train_acc"] for r in history], label="train")
    axes[1].plot(ep, [r["val_acc"] for r in history], label="val")
    axes[1].set_title("accuracy")
    axes[2].plot(ep, [r["lr"] for r in history])
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    return fig_png(fig)


def confusion_heatmap(cm: list[list[int]], classes: list[str], normalize: bool = False) -> bytes:
    """Confusion matrix (rows: true class) as counts or row-normalized fractions."""
    m = np.asarray(cm, dtype=float)
    if normalize:
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
    k = len(classes)
    size = min(12, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=90 if k > 10 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                txt = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix" + (" (row-normalized)" if normalize else " (counts)"))
    return fig_png(fig)


def reliability_diagram(before: dict[str, Any], after: dict[str, Any] | None, temperature: float = 1.0) -> bytes:
    """Accuracy against mean confidence per bin (the diagonal is perfect calibration), before
    and after temperature scaling, with the share of samples per bin below."""
    edges = np.asarray(before["bin_edges"])
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5.2, 5.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    curves = [("before", before, "tab:red")] + ([(f"after (T={temperature:.2f})", after, "tab:blue")] if after else [])
    for label, r, color in curves:
        count = np.asarray(r["bin_count"])
        used = count > 0  # empty bins have no accuracy
        ax.plot(np.asarray(r["bin_confidence"])[used], np.asarray(r["bin_accuracy"])[used], marker="o", color=color,
                label=f"{label}: ECE {r['ece']:.4f}")
        axc.stairs(count / max(count.sum(), 1), edges, color=color)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("reliability diagram")
    axc.set_xlabel("confidence (max softmax probability)")
    axc.set_ylabel("share")
    return fig_png(fig)


def line_table(title: str, rows: dict[str, dict[str, float]]) -> bytes:
    """One line per row over the shared column keys (e.g. accuracy per corruption severity)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, vals in rows.items():
        xs = list(vals)
        ax.plot(range(len(xs)), [vals[k] for k in xs], marker="o", label=name)
        ax.set_xticks(range(len(xs)), xs)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(rows) <= 20:
        ax.legend(fontsize=7, ncol=2 if len(rows) > 8 else 1)
    return fig_png(fig)


def embedding_scatter(info: dict[str, Any]) -> bytes:
    """The 2-D embedding map of `foveal embed` (embedding_map.json), one colour per class."""
    xy = np.asarray(info["coords"], dtype=float).reshape(-1, 2)
    labels = np.asarray(info["labels"], dtype=int)
    classes = info["classes"] or ["all"]
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    size = 12 if len(xy) < 2000 else 4
    for k, name in enumerate(classes):
        sel = labels == k
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=cmap(k % cmap.N), label=name, alpha=0.7, linewidths=0)
    ax.set_title(f"{info.get('method', '').upper()} of {info.get('dim', '?')}-d embeddings, "
                 f"{info.get('split', '')} split ({len(xy)} images)")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2 if len(classes) > 10 else 1)
    return fig_png(fig)
