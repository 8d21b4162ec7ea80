"""Label-check probabilities from pretrained weights (`foveal check --labels --pretrained WEIGHTS`).

The from-scratch check (`tasks/labels.py`) trains K small CNNs at 32 px, which learn little from a
thousand photos. With weights that already see, the check instead: loads the images once at the
weights' input size with their preprocessing (a foveal file's model card, the publisher's for named
weights, as `foveal train --pretrained` takes them: `training.prepare.resolve_start`), runs the frozen
backbone once over them (the model contract's pre-logit features, `tasks.embed.embed_split`), and for
each fold fits a linear head, a multinomial logistic regression, on the features of the other folds.
Its probabilities of the held-out fold are the out-of-sample ones confident learning needs. A head is
full-batch L-BFGS from zero weights on standardized features: a convex problem with one answer, so the
result depends on the folds' seed alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..card import ModelCard, Preprocessing
from ..config import CrossValConfig
from ..data.images import ImageStore, as_images
from ..data.preprocess import stats

Log = Callable[[str], None]


@dataclass
class PretrainedWeights:
    """What `--pretrained` names, resolved before any image is loaded: the architecture and its preprocessing."""

    source: str  # as given: a weights file, a run folder, or a name ('imagenet', 'tv:...', 'hf-hub:...')
    model: str  # the architecture the weights are for
    origin: str  # where the weights and their preprocessing come from, in words
    pre: Optional[Preprocessing]  # None: a plain state_dict of an architecture with no published preprocessing
    in_chans: Optional[int]  # the channels the weights take (None: unknown, the images' own)

    def record(self, img_size: int, mean: Sequence[float], std: Sequence[float], dim: int) -> dict[str, Any]:
        """check.json's account of the model behind the probabilities."""
        return {"model": self.model, "pretrained": self.source, "origin": self.origin, "img_size": img_size,
                "mean": [round(float(m), 6) for m in mean], "std": [round(float(s), 6) for s in std],
                "features": dim, "head": "linear (multinomial logistic regression, L-BFGS) per fold"}


def resolve_pretrained(source: str, model: Optional[str], log: Log = print) -> PretrainedWeights:
    """The weights `source` names, without loading them: a foveal weights file or run folder carries its
    architecture and preprocessing (its model card); published weights by name need `model`, the
    architecture, and bring the publisher's preprocessing; a plain state_dict needs `model` too."""
    from ..io import read_meta
    from ..models import hub
    from ..models.weights import resolve_weights_path

    if hub.is_weights_name(source):
        if not model:
            raise ValueError(f"--pretrained '{source}' names published weights; say which architecture they are "
                             "for with --model (e.g. --model resnet18)")
        named = hub.resolve(source, model)  # downloaded once, verified, cached; offline: WeightsUnavailable
        log(f"pretrained '{source}': {named.origin}, cached at {named.path}")
        return PretrainedWeights(source, model, named.origin, named.preprocessing,
                                 len(named.preprocessing.mean) if named.preprocessing else None)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--pretrained '{source}': no such weights file or run folder (or a name: "
                                "'imagenet', 'tv:<arch>.<WEIGHTS>', 'hf-hub:<repo>')")
    try:
        meta = read_meta(resolve_weights_path(path))
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--pretrained '{source}': {e}") from None
    if ModelCard.describes(meta):
        card = ModelCard.from_dict(meta)
        if model and model != card.model:
            raise ValueError(f"--pretrained '{source}' holds a {card.model}, not the --model {model}; "
                             "leave --model out (a foveal file names its architecture)")
        return PretrainedWeights(source, card.model, f"foveal weights of {card.model}", card.preprocessing,
                                 card.in_chans)
    if not model:
        raise ValueError(f"--pretrained '{source}' is a plain state_dict (no foveal metadata); say which "
                         "architecture it holds with --model")
    found = hub.file_preprocessing(path, model)
    return PretrainedWeights(source, model, f"a plain state_dict of {model}" + (f", {found[1]}" if found else ""),
                             found[0] if found else None, len(found[0].mean) if found else None)


def load_backbone(w: PretrainedWeights, num_classes: int, in_chans: int, img_size: int, device: torch.device,
                  log: Log = print) -> torch.nn.Module:
    """The model of `w` with its weights, through the loading `foveal train --pretrained` uses (every key
    accounted for; refused when under half of the backbone fits); in eval mode on `device`."""
    from ..models import create_model
    from ..training.finetune import load_for_finetune

    model = create_model(w.model, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    load_for_finetune(model, w.source, None, log)
    return model.to(device).eval()


def probe_images(images: "torch.Tensor | ImageStore", w: PretrainedWeights, img_size: int) -> ImageStore:
    """Images in the weights' channels (gray repeated to RGB, RGB to luma) at `img_size` (squashed if another size)."""
    return as_images(images).with_format(in_chans=w.in_chans, img_size=img_size)


def _fit_head(f: torch.Tensor, y: torch.Tensor, k: int, cfg: CrossValConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """A multinomial logistic regression on features f (n, D) with labels y: mean cross-entropy plus
    probe_l2 / 2 |W|^2 on standardized features, `probe_steps` L-BFGS iterations from zero weights.
    Returns the map from features to (m, k) probabilities."""
    mu, sd = f.mean(0), f.std(0).clamp_min(1e-6)
    z = (f - mu) / sd
    weight = torch.zeros(f.shape[1], k, device=f.device, requires_grad=True)
    bias = torch.zeros(k, device=f.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=cfg.probe_steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ weight + bias, y) + 0.5 * cfg.probe_l2 * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return lambda g: (((g - mu) / sd) @ weight + bias).softmax(1)


def head_probs(feats: torch.Tensor, labels: torch.Tensor, jobs: list[tuple[torch.Tensor, torch.Tensor]],
               num_classes: int, cfg: CrossValConfig, names: list[str], log: Log = print) -> np.ndarray:
    """(N, num_classes) probabilities: a linear head per (train, held) pair of positions in feats (N, D),
    each predicting its held positions (rows no job holds stay 0)."""
    probs = torch.zeros(len(labels), num_classes)
    y = labels.to(feats.device)
    for name, (train, held) in zip(names, jobs):
        t0 = time.perf_counter()
        with torch.enable_grad():
            head = _fit_head(feats[train.to(feats.device)], y[train.to(feats.device)], num_classes, cfg)
        p = head(feats[held.to(feats.device)]).float().cpu()
        probs[held] = p
        acc = (p.argmax(1) == labels[held]).float().mean().item()
        log(f"{name}: linear head fitted on {len(train):,} feature vectors, predicted {len(held):,} "
            f"(agreement with the given labels {acc:.4f}), {time.perf_counter() - t0:.1f} s")
    return probs.numpy()


def probe_size(w: PretrainedWeights, img_size: Optional[int]) -> int:
    """The side the images are loaded at: `img_size` when given, else the weights' input size (a state_dict
    nobody describes: the architecture's default)."""
    from ..models import model_info

    if img_size:
        return img_size
    if w.pre is not None:
        return w.pre.img_size
    return 224 if w.model.startswith("timm/") else model_info(w.model)["default_img_size"]


def backbone_features(w: PretrainedWeights, x: torch.Tensor, others: Sequence[ImageStore], num_classes: int,
                      img_size: int, device: torch.device, log: Log = print
                      ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(x in the weights' channels and at `img_size`, as the page shows it; the (N, D) features of the images
    of `others` and then of x, on `device`; check.json's record of the model). The backbone runs once per
    image; normalized with the weights' mean/std (a state_dict nobody describes: x's own)."""
    from .embed import embed_split

    x = probe_images(x, w, img_size).load()
    mean, std = (list(w.pre.mean), list(w.pre.std)) if w.pre is not None else stats(x)
    model = load_backbone(w, num_classes, x.shape[1], img_size, device, log)
    t0 = time.perf_counter()
    stores = [probe_images(s, w, img_size) for s in others] + [as_images(x)]
    f = torch.cat([torch.from_numpy(embed_split(model, s, mean, std, device)) for s in stores]).to(device)
    log(f"features: {len(f):,} images x {f.shape[1]} from {w.model} at {img_size} px, {time.perf_counter() - t0:.0f} s")
    return x, f, w.record(img_size, mean, std, int(f.shape[1]))
