"""Checkpoints: weights with their metadata, and the full training state for --resume.

Weights files (`best.safetensors`, `last.safetensors`) carry everything needed to use the
model in its card (`foveal.card.ModelCard`): architecture, classes, preprocessing, test-time views,
temperature, config and versions. The resume file adds optimizer state, EMA weights and the
loop's counters. All are safetensors with JSON metadata, written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .._version import __version__
from ..card import ModelCard, Preprocessing
from ..config import DataConfig
from ..io import load_tensors, save_tensors
from ..models import create_model
from ..models.weights import resolve_weights_path


def model_card(model: nn.Module, classes: list[str], data: DataConfig, config: dict[str, Any],
               tta: Sequence[str] = (), epoch: Optional[int] = None, extra: Optional[dict] = None) -> ModelCard:
    """The card that travels with weights: all `predict` needs to use them. `data` is the run's resolved
    DataConfig (size, resize rule, crop fraction and mean/std all set)."""
    pre = Preprocessing(data.mean, data.std, int(data.img_size), float(data.crop_pct or 1.0), data.resize)
    return ModelCard(getattr(model, "model_name", type(model).__name__), tuple(classes),
                     int(getattr(model, "in_chans", 3)), pre, tuple(tta), epoch=epoch, config=config,
                     foveal_version=__version__, torch_version=torch.__version__, extra=extra or {})


def save_weights(path: str | Path, model: nn.Module, card: ModelCard) -> None:
    save_tensors(path, dict(model.state_dict()), card.to_dict())


def load_model(source: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild a model from a foveal weights file or run folder; returns (model in eval mode, its card)."""
    path = resolve_weights_path(source)
    sd, meta = load_tensors(path)
    if not ModelCard.describes(meta):
        raise ValueError(f"'{path}' has no foveal metadata (classes, normalization, input size); to start "
                         "training from plain weights use --pretrained")
    card = ModelCard.from_dict(meta)
    model = create_model(card.model, num_classes=len(card.classes), in_chans=card.in_chans,
                         img_size=card.preprocessing.img_size, **card.model_kwargs())
    model.load_state_dict(sd)
    return model.to(device).eval(), card


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
