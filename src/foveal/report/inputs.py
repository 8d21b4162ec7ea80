"""What a report is built from, gathered from a finished training run, an evaluation, or a
run folder on disk (``foveal report RUN``), so the three entry points render the same page."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .. import __version__
from ..data.images import ImageStore
from ..data.loader import normalize_u8
from ..io import read_result_json
from ..metrics.calibration import reliability


@dataclass
class ReportInputs:
    title: str
    meta: dict[str, Any]  # the weights' metadata (classes, normalization, config, temperature)
    metrics: dict[str, Any]  # ConfusionMeter.compute() output, plus split / calibration / timing keys
    history: list[dict[str, Any]] = field(default_factory=list)
    logits: Optional[torch.Tensor] = None  # (N, K) on the evaluated split, in its order
    images: Optional[ImageStore] = None  # (N, C, H, W) uint8 (in memory or files), same order
    labels: Optional[torch.Tensor] = None  # (N,)
    paths: Optional[list[str]] = None
    model: Optional[nn.Module] = None
    robustness: Optional[dict[str, Any]] = None
    embedding: Optional[dict[str, Any]] = None  # embedding_map.json of `foveal embed`


def calibration_of(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict[str, Any]:
    """ECE and reliability bins before and after dividing the logits by the fitted temperature."""
    return {"temperature": temperature, "before": reliability(logits, labels),
            "after": reliability(logits, labels, 15, temperature)}


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_robustness(run_dir: Path) -> Optional[dict[str, Any]]:
    """robustness.json of the run (written by foveal.robustness), or None; a broken file is an error."""
    return read_result_json(Path(run_dir) / "robustness.json", "the robustness evaluation (`foveal robust`)")


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device"
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}"


def run_summary(inp: ReportInputs) -> dict[str, Any]:
    """Rows of the summary table: data, model, size, cost, time, machine, versions, seed."""
    from ..models import count_gflops, count_params

    meta, m = inp.meta, inp.metrics
    cfg = meta.get("config", {})
    row: dict[str, Any] = {
        "data": m.get("data") or cfg.get("data", {}).get("source"),
        "evaluated split": f"{m.get('split', 'test')} ({m.get('support', '?')} images)",
        "model": meta.get("model"),
        "input": f"{meta.get('img_size')} px x {meta.get('in_chans')} channels",
        "classes": len(meta.get("classes", [])),
        "start": _start(cfg),
        "preprocessing": (f"mean {meta.get('mean')}, std {meta.get('std')}, "
                          f"{cfg.get('data', {}).get('resize') or 'squash'} to {meta.get('img_size')} px"
                          + (f" (centre {meta['crop_pct']:g} of the shorter side)"
                             if cfg.get('data', {}).get('resize') == "crop" and meta.get("crop_pct") else "")),
    }
    if inp.model is not None:
        row["parameters"] = f"{count_params(inp.model):,}"
        try:
            row["GFLOPs (one image)"] = f"{count_gflops(inp.model, meta['img_size'], meta['in_chans']):.4f}"
        except Exception as e:  # a model the FLOP counter cannot trace still gets its report
            row["GFLOPs (one image)"] = f"n/a ({type(e).__name__})"
    row.update({
        "epochs (best)": f"{len(inp.history)} ({m.get('best_epoch', meta.get('epoch', '?'))})" if inp.history else "-",
        "training time (s)": m.get("train_seconds", sum(r.get("train_seconds", 0.0) for r in inp.history) or "-"),
        "seed": cfg.get("train", {}).get("seed"),
        "hardware (this report)": _hardware(),
        "foveal / torch (training)": f"{meta.get('foveal_version', '?')} / {meta.get('torch_version', '?')}",
        "foveal / torch (this report)": f"{__version__} / {torch.__version__}",
    })
    return row


def _start(cfg: dict[str, Any]) -> str:
    """How training started: from scratch, or which weights and which fine-tuning schedule."""
    m = cfg.get("model", {})
    if not m.get("pretrained"):
        return "from scratch"
    return f"pretrained {m['pretrained']} (fine-tune: {m.get('finetune')}, layer decay {cfg.get('optim', {}).get('layer_decay')})"


def gallery_items(inp: ReportInputs, k: int = 12) -> Optional[list[dict[str, Any]]]:
    """The k most confident mistakes with PNGs of the image and its Grad-CAM overlay for the
    predicted class (gradient saliency for a model without a feature map, e.g. an MLP, which
    declares no `cam_layer`); None when images, logits or model are missing."""
    if inp.logits is None or inp.images is None or inp.labels is None or inp.model is None:
        return None
    from ..explain import explain, overlay_png

    t = float(inp.meta.get("temperature", 1.0))
    probs = torch.softmax(inp.logits.float().cpu() / t, dim=1)
    conf, pred = probs.max(1)
    labels = inp.labels.cpu()
    wrong = (pred != labels).nonzero().flatten()
    idx = wrong[conf[wrong].argsort(descending=True)][:k]
    if len(idx) == 0:
        return []
    device = next(inp.model.parameters()).device
    images = inp.images.load(idx)  # (k, C, H, W) uint8: decodes only these k when streamed
    x = normalize_u8(images.to(device), inp.meta["mean"], inp.meta["std"])
    method = "gradcam" if getattr(inp.model, "cam_layer", "") else "saliency"
    maps = explain(inp.model, x, method, target=pred[idx].to(device)).cpu()
    classes = inp.meta["classes"]
    return [{"image": overlay_png(images[n], torch.zeros(maps.shape[-2:]), alpha=0.0),
             "overlay": overlay_png(images[n], maps[n]), "true": classes[int(labels[i])],
             "pred": classes[int(pred[i])], "conf": float(conf[i]), "method": method,
             "path": inp.paths[i] if inp.paths else None} for n, i in enumerate(idx.tolist())]
