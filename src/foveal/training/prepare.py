"""Turn a config into ready data: load, split, match channels, fix size and normalization."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from ..config import RunConfig
from ..data import DataBundle, load_source, make_splits
from ..data.preprocess import normalize_u8, stats
from ..data.images import ImageStore
from ..models import model_info


def default_img_size(cfg: RunConfig) -> int:
    """The model's own default input size (224 for timm/ models)."""
    if cfg.model.name.startswith("timm/"):
        return 224
    return model_info(cfg.model.name)["default_img_size"]


def match_format(bundle: DataBundle, in_chans: int, img_size: int) -> DataBundle:
    """Every split converted to `in_chans` (gray->RGB repeats; RGB->gray by ITU-R 601 luma), then
    resized to `img_size`; the bundle itself when it already has both."""
    change = {k: v for k, v in (("in_chans", in_chans), ("img_size", img_size)) if getattr(bundle, k) != v}
    if not change:
        return bundle
    splits = {k: dataclasses.replace(s, images=s.images.with_format(**change)) for k, s in bundle.splits.items()}
    return DataBundle(bundle.name, bundle.classes, splits, bundle.problems)


def prepare_data(cfg: RunConfig, bundle: Optional[DataBundle] = None,
                 log: Callable[[str], None] = print) -> tuple[DataBundle, RunConfig]:
    """Load and split the data; return it with a config whose data fields are all resolved."""
    cfg, weights_pre = resolve_start(cfg, log)
    d = cfg.data
    img_size = d.img_size or default_img_size(cfg)
    bundle = bundle if bundle is not None else load_source(d, img_size)
    for p in bundle.problems:
        log(f"data: {p}")
    bundle = make_splits(bundle, d, cfg.train.seed)
    bundle = match_format(bundle, d.in_chans or bundle.in_chans, img_size)
    mean, std = d.mean, d.std
    if (mean is None or std is None) and weights_pre is not None:
        mean, std = weights_pre
        mean, std = (mean, std) if len(mean) == bundle.in_chans else ([sum(mean) / len(mean)], [sum(std) / len(std)])
    if mean is None or std is None:
        mean, std = stats(bundle.splits["train"].images)
    if len(mean) != bundle.in_chans or len(std) != bundle.in_chans:
        raise ValueError(f"data.mean/data.std have {len(mean)}/{len(std)} values for {bundle.in_chans}-channel images")
    data = dataclasses.replace(d, img_size=img_size, in_chans=bundle.in_chans, mean=[round(m, 6) for m in mean],
                               std=[round(s, 6) for s in std])
    return bundle, dataclasses.replace(cfg, data=data)


def resolve_start(cfg: RunConfig, log: Callable[[str], None] = print
                  ) -> tuple[RunConfig, Optional[tuple[list[float], list[float]]]]:
    """Fill the fields left to 'auto' by how training starts, and return the weights' mean/std.

    From scratch: full training, random crops, squashed inputs, no layer decay, statistics of the data.
    From published (ImageNet-style) weights, by name or as a plain state_dict file: the 'staged'
    fine-tune, random-resized crops and flips, layer decay 0.75, and the weights' own preprocessing
    (`foveal.models.hub`: mean/std, input size, shorter side + centre crop). From a foveal run (a
    self-supervised one too): its mean/std, size and resize, and otherwise the scratch recipe, which
    is the recipe of the domain it was trained in. Preprocessing is never recomputed from the data
    when the weights carry it. Fields the user set are kept; config.yaml records the values in force.
    """
    from ..models import hub

    m, d, o = cfg.model, cfg.data, cfg.optim
    if d.crop_pct is not None and not 0 < d.crop_pct <= 1:  # here, once: inside the decoder it would read as
        raise ValueError(f"data.crop_pct must be in (0, 1], got {d.crop_pct}")  # a broken file per image
    p, where = None, ""
    if m.pretrained and not cfg.train.resume:
        if hub.is_weights_name(m.pretrained):
            named = hub.resolve(m.pretrained, m.name)
            log(f"pretrained: {named.origin}, cached at {named.path}")
            p, where = named.preprocessing, "the weights' publisher"
        else:
            p, where = hub.file_preprocessing(m.pretrained, m.name) or (None, "")
        if p is not None and (d.mean is None or d.std is None):
            log(f"data: mean {list(p.mean)} / std {list(p.std)} from {where} (set data.mean/data.std to override)")
    started = bool(m.pretrained) and where != hub.FOVEAL_META  # published weights: the fine-tuning recipe
    data = dataclasses.replace(
        d, augment=d.augment if d.augment is not None else (["rrc", "flip"] if started else ["crop"]),
        resize=d.resize or (p.resize if p is not None else "squash"),
        crop_pct=d.crop_pct or (p.crop_pct if p is not None and not cfg.train.resume else None) or 1.0,
        img_size=d.img_size or (p.img_size if p is not None and not cfg.train.resume else None))
    finetune = m.finetune if m.finetune != "auto" else ("staged" if started else "full")
    optim = dataclasses.replace(o, layer_decay=o.layer_decay if o.layer_decay is not None
                                else (0.75 if finetune == "staged" else 1.0))
    cfg = dataclasses.replace(cfg, data=data, model=dataclasses.replace(m, finetune=finetune), optim=optim)
    return cfg, ((p.mean, p.std) if p is not None else None)


def init_from_data(model: torch.nn.Module, images: ImageStore, mean: list[float], std: list[float]) -> None:
    """Give a model that asks for it (`init_from_data` overridden, e.g. AirNet's patch whitening)
    a sample of normalized training images; other models are left alone.

    Up to 2048 evenly spaced images (folders come sorted by class, so a prefix would hold one
    class; streamed files give at most 512, see `FileImages.sample`). Deterministic, so every
    rank of a distributed job computes the same filters.
    """
    from ..models.base import needs_data_init

    if not needs_data_init(model):
        return
    model.init_from_data(normalize_u8(images.sample(2048), mean, std))
