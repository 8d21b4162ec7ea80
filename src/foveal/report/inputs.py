"""What a report shows, computed beforehand: `foveal.tasks.reporting` gathers it from a finished
training run, an evaluation, or a run folder on disk (``foveal report RUN``), so the three entry
points render the same page; this package only renders it."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .._version import __version__
from ..card import ModelCard


@dataclass
class ReportInputs:
    title: str
    card: ModelCard  # the weights' model card (classes, preprocessing, config, temperature)
    metrics: dict[str, Any]  # ConfusionMeter.compute() output, plus split / calibration / timing keys
    history: list[dict[str, Any]] = field(default_factory=list)
    model_stats: dict[str, str] = field(default_factory=dict)  # "parameters", "GFLOPs (one image)"
    # The most confident mistakes: {"image", "overlay" (PNG bytes), "true", "pred", "conf", "path"} each;
    # None when no images or model were at hand, [] when there are no mistakes.
    gallery: Optional[list[dict[str, Any]]] = None
    robustness: Optional[dict[str, Any]] = None  # robustness.json of `foveal robust`
    embedding: Optional[dict[str, Any]] = None  # embedding_map.json of `foveal embed`


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA device"
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}"


def summary_rows(inp: ReportInputs) -> dict[str, Any]:
    """Rows of the summary table: data, model, size, cost, time, machine, versions, seed."""
    card, m = inp.card, inp.metrics
    cfg, pre = card.config, card.preprocessing
    row: dict[str, Any] = {
        "data": m.get("data") or card.data_source,
        "evaluated split": f"{m.get('split', 'test')} ({m.get('support', '?')} images)",
        "model": card.model,
        "input": f"{pre.img_size} px x {card.in_chans} channels",
        "classes": len(card.classes),
        "start": _start(cfg),
        "preprocessing": (f"mean {list(pre.mean)}, std {list(pre.std)}, {pre.resize} to {pre.img_size} px"
                          + (f" (centre {pre.crop_pct:g} of the shorter side)" if pre.resize == "crop" else "")),
    }
    row.update(inp.model_stats)
    row.update({
        "epochs (best)": f"{len(inp.history)} ({m.get('best_epoch', card.epoch or '?')})" if inp.history else "-",
        "training time (s)": m.get("train_seconds", sum(r.get("train_seconds", 0.0) for r in inp.history) or "-"),
        "seed": card.seed,
        "hardware (this report)": _hardware(),
        "foveal / torch (training)": f"{card.foveal_version} / {card.torch_version}",
        "foveal / torch (this report)": f"{__version__} / {torch.__version__}",
    })
    return row


def _start(cfg: dict[str, Any]) -> str:
    """How training started: from scratch, or which weights and which fine-tuning schedule."""
    m = cfg.get("model", {})
    if not m.get("pretrained"):
        return "from scratch"
    return f"pretrained {m['pretrained']} (fine-tune: {m.get('finetune')}, layer decay {cfg.get('optim', {}).get('layer_decay')})"
