"""Model registry, `create_model` and model facts (parameters, GFLOPs)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(*, family: str, default_img_size: int, min_img_size: int, **meta: Any) -> Callable:
    """Register a variant constructor `fn(num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kw)`.

    `default_img_size`: the size the variant is meant for (224 for ImageNet variants);
    `min_img_size`: the smallest input it builds and runs at.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(fn.__name__, fn, family=family, default_img_size=default_img_size, min_img_size=min_img_size, **meta)
        return fn

    return deco


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a substring or glob."""
    return MODELS.names(pattern)


def model_info(name: str) -> dict[str, Any]:
    """What the registry knows of a model before building it: family, default and smallest input
    size... (not to be confused with a trained model's weights metadata, `meta` in engine/)."""
    return dict(MODELS.entry(name).meta)


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    pretrained: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (or `timm/<name>` when timm is installed) under the model contract.

    `img_size` picks the stem (small inputs keep their resolution; see models.base) and
    defaults to the variant's `default_img_size`. `pretrained` is a safetensors file or a
    run folder; its head is replaced when the class count differs.
    """
    if name.startswith("timm/"):
        from .timm_adapter import create_timm_model

        model = create_timm_model(name[5:], num_classes, in_chans, img_size, drop_rate, drop_path_rate, **kwargs)
    else:
        meta = model_info(name)
        img_size = img_size or meta["default_img_size"]
        if img_size < meta["min_img_size"]:
            raise ValueError(f"model '{name}' needs img_size >= {meta['min_img_size']}, got {img_size}")
        model = MODELS.get(name)(
            num_classes=num_classes, in_chans=in_chans, img_size=img_size,
            drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kwargs,
        )
    model.model_name = name
    if pretrained:
        from .weights import load_pretrained

        load_pretrained(model, pretrained)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_gflops(model: nn.Module, img_size: int, in_chans: int | None = None) -> float:
    """Forward GFLOPs for one image (multiply-add counted as 2 FLOPs), by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    in_chans = in_chans or getattr(model, "in_chans", 3)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, img_size, img_size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def model_table(pattern: str | None = None, img_size: int | None = None) -> list[dict[str, Any]]:
    """One row per registered model (filtered by `pattern`): name, family, params (at 1000
    classes and 3 channels), GFLOPs at `img_size` (default: each model's default size),
    default and min input size. GFLOPs are None where `img_size` is below a model's minimum.

    Models are built on the meta device (no memory, no initialization), so the whole table
    takes seconds; a model that cannot run there is built on the CPU instead.
    """
    rows = []
    for name in list_models(pattern):
        meta = model_info(name)
        size = img_size or meta["default_img_size"]
        fits = size >= meta["min_img_size"]
        try:
            with torch.device("meta"):
                model = create_model(name, img_size=size if fits else None)
            gflops = count_gflops(model, size) if fits else None
        except (NotImplementedError, RuntimeError):  # an op without a meta kernel
            model = create_model(name, img_size=size if fits else None)
            gflops = count_gflops(model, size) if fits else None
        rows.append({
            "name": name, "family": meta["family"], "params": count_params(model), "gflops": gflops,
            "img_size": size, "default_img_size": meta["default_img_size"], "min_img_size": meta["min_img_size"],
        })
    return rows
