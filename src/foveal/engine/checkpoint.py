"""Checkpoints: weights with their metadata, and the full training state for --resume.

Weights files (`best.safetensors`, `last.safetensors`) carry everything needed to use the
model: architecture, classes, normalization, input size, config and versions. The resume
file adds optimizer state, EMA weights and the loop's counters. All are safetensors with
JSON metadata, written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .._version import __version__
from ..io import load_tensors, save_tensors
from ..models import create_model
from ..models.weights import resolve_weights_path


def model_meta(model: nn.Module, classes: list[str], mean: list[float], std: list[float], img_size: int,
               resize: str, config: dict[str, Any], extra: Optional[dict] = None,
               crop_pct: Optional[float] = None) -> dict[str, Any]:
    """The metadata that travels with weights: all `predict` needs to use them."""
    return {
        "format": "foveal-weights/1",
        "foveal_version": __version__,
        "torch_version": torch.__version__,
        "model": getattr(model, "model_name", type(model).__name__),
        "classes": list(classes),
        "in_chans": int(getattr(model, "in_chans", 3)),
        "img_size": int(img_size),
        "resize": resize,
        "crop_pct": float(crop_pct or 1.0),  # 'crop': centre square side / shorter side
        "mean": list(mean),
        "std": list(std),
        "config": config,
        **(extra or {}),
    }


def save_weights(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    save_tensors(path, dict(model.state_dict()), meta)


def load_model(source: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a foveal weights file or run folder; returns (model in eval mode, metadata)."""
    path = resolve_weights_path(source)
    sd, meta = load_tensors(path)
    if meta.get("format") != "foveal-weights/1":
        raise ValueError(f"'{path}' has no foveal metadata (classes, normalization, input size); to start "
                         "training from plain weights use --pretrained")
    cfg = meta.get("config", {}).get("model", {})
    model = create_model(meta["model"], num_classes=len(meta["classes"]), in_chans=meta["in_chans"],
                         img_size=meta["img_size"], **{k: cfg[k] for k in ("drop_rate", "drop_path_rate") if k in cfg})
    model.load_state_dict(sd)
    return model.to(device).eval(), meta


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_resume(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                ema: Optional[nn.Module], loop_state: dict[str, Any]) -> None:
    """Everything to continue training exactly: weights, optimizer, EMA, counters and history."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    save_tensors(path, tensors, {"format": "foveal-resume/1", "optimizer": opt_meta, "loop": loop_state})


def load_resume(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                ema: Optional[nn.Module]) -> dict[str, Any]:
    """Restore what `save_resume` wrote into the given objects; return the loop state."""
    device = next(model.parameters()).device
    tensors, meta = load_tensors(path, device=device)
    if meta.get("format") != "foveal-resume/1":
        raise ValueError(f"'{path}' is not a foveal resume checkpoint")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    return meta["loop"]
