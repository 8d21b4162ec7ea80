"""Fine-tuning from pretrained weights: loading with a full report, linear probe, gradual
unfreezing and layer-wise learning-rate decay.

Everything here goes through the model contract: `classifier_name` tells the head from the
backbone and `layer_ids()` orders parameters by depth, so no architecture is named.

- Loading (`load_for_finetune`): every key of the file and the model is accounted for in a
  `LoadReport` (loaded, input-channel adapted, classifier replaced, missing, unexpected,
  shape-mismatched), printed and saved as ``pretrained.json`` in the run folder. Keys that
  do not fit are listed, never silently dropped; a file of which less than half of the
  backbone loads is refused, as it is almost surely for another architecture.
- ``model.finetune = linear``: only the classifier learns; the backbone's batch-norm layers
  stay in eval mode so their running statistics are those of the pretraining data.
- ``model.finetune = gradual``: the classifier alone first, then one more depth from the top
  every ``model.unfreeze_every`` epochs (Howard & Ruder 2018, ULMFiT).
- ``model.finetune = staged`` (what ``auto`` picks for pretrained starts): the classifier alone for
  ``model.freeze_epochs``, then every layer at ``lr x model.unfrozen_lr_scale`` with layer decay
  (fastai's ``fine_tune``): the new head settles before its gradients reach the features.
- ``optim.layer_decay`` < 1: depth d of L gets ``lr * layer_decay ** (L - d)`` (Clark et al.
  2020; BEiT), so layers near the input, which hold the most general features, move least.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from torch import nn

from ..config import ModelConfig, OptimConfig
from ..io import write_json
from ..models.base import default_layer_ids
from ..models.weights import LoadReport, load_pretrained
from .optim import decayed_params

MIN_LOADED_FRACTION = 0.5  # of the backbone's tensors; below it the file is refused


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Parameter name -> depth through the contract (`default_layer_ids` for non-foveal modules)."""
    if hasattr(model, "layer_ids"):
        return model.layer_ids()
    return default_layer_ids(model, getattr(model, "classifier_name", "head"))


def load_for_finetune(model: nn.Module, source: str, run_dir: Path | None = None,
                      log: Callable[[str], None] = print) -> LoadReport:
    """Load `source` into `model`, keeping what fits and listing everything that does not.

    Raises ValueError when under MIN_LOADED_FRACTION of the backbone's tensors could be loaded.
    """
    from ..models import hub

    if hub.is_weights_name(source):  # by name: resolved (downloaded, verified, cached) by prepare_data already
        named = hub.resolve(source, getattr(model, "model_name", ""))
        log(f"pretrained '{source}': {named.origin}")
        source = str(named.path)
    report = load_pretrained(model, source, strict=False)
    head = getattr(model, "classifier_name", "head") + "."
    backbone = [k for k in model.state_dict() if not k.startswith(head)]
    fitted = [k for k in (*report.loaded, *report.adapted) if not k.startswith(head)]  # a loaded head is no backbone
    fraction = len(fitted) / max(1, len(backbone))
    if run_dir is not None:
        write_json(run_dir / "pretrained.json", {"source": str(source), "loaded_fraction": round(fraction, 4),
                                                 **dataclasses.asdict(report)})
    log(f"pretrained '{source}': {report.summary()}")
    for problem in report.problems:
        log(f"  pretrained: NOT LOADED {problem}")
    if fraction < MIN_LOADED_FRACTION:
        lines = [f"{kind}: {k}" for kind, keys in (("missing", report.missing), ("unexpected", report.unexpected),
                                                   ("shape", report.mismatched)) for k in _head(keys)]
        raise ValueError(f"pretrained '{source}': only {fraction:.0%} of the backbone's tensors fit model "
                         f"'{getattr(model, 'model_name', type(model).__name__)}'; is it for another architecture? "
                         f"{len(report.missing)} missing, {len(report.unexpected)} unexpected, "
                         f"{len(report.mismatched)} mis-shaped keys, first ones:\n  " + "\n  ".join(lines))
    return report


def _head(keys: list[str], n: int = 8) -> list[str]:
    return keys[:n] + ([f"... and {len(keys) - n} more"] if len(keys) > n else [])


def layer_decay_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Optimizer groups by (depth, decayed or not), each with lr = cfg.lr * layer_decay**(L - depth).

    Frozen parameters are included too (they get no gradient, so the optimizer skips them),
    so gradual unfreezing needs no new optimizer. Weight decay follows `optim.decayed_params`.
    """
    ids = layer_ids(model)
    top = max(ids.values(), default=0)
    is_decayed = decayed_params(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        depth = ids.get(name, top)
        decayed = is_decayed[name]
        scale = cfg.layer_decay ** (top - depth)
        g = groups.setdefault((depth, decayed), {"params": [], "weight_decay": cfg.weight_decay if decayed else 0.0,
                                                 "lr": cfg.lr * scale, "lr_scale": scale, "layer_id": depth})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


class Finetuner:
    """Applies the config's freezing policy at the start of every epoch (after `model.train()`)."""

    def __init__(self, model: nn.Module, cfg: ModelConfig):
        if cfg.unfreeze_every < 1:
            raise ValueError(f"model.unfreeze_every must be >= 1, got {cfg.unfreeze_every}")
        self.cfg = cfg
        self.ids = layer_ids(model)
        self.top = max(self.ids.values(), default=0)

    @property
    def frozen_ever(self) -> bool:
        return self.cfg.finetune not in ("full", "auto")  # 'auto' is resolved by prepare_data; unresolved = full

    def lowest_trainable_depth(self, epoch: int) -> int:
        """Parameters at this depth or deeper learn during `epoch` (0-based)."""
        mode = self.cfg.finetune
        if not self.frozen_ever:
            return 0
        if mode == "linear" or (mode == "staged" and epoch < self.cfg.freeze_epochs):
            return self.top
        if mode == "staged":
            return 0
        return max(0, self.top - epoch // self.cfg.unfreeze_every)

    def lr_scale(self, epoch: int) -> float:
        """Multiplier of every group's learning rate in `epoch`: 'staged' lowers it once the backbone trains."""
        if self.cfg.finetune == "staged" and epoch >= self.cfg.freeze_epochs:
            return self.cfg.unfrozen_lr_scale
        return 1.0

    def set_trainable(self, model: nn.Module, epoch: int) -> bool:
        """Set requires_grad per parameter for `epoch`; True when the trainable set changed.

        Called before DDP wraps the model and again at every epoch: DDP registers its gradient
        hooks for the parameters that require grad when it is built, so the trainer re-wraps the
        model whenever this returns True (see `Trainer.train_epoch`)."""
        if not self.frozen_ever:
            return False
        low = self.lowest_trainable_depth(epoch)
        changed = False
        for name, p in model.named_parameters():
            want = self.ids.get(name, self.top) >= low
            changed |= p.requires_grad != want
            p.requires_grad_(want)
        return changed

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """`set_trainable`, then put modules whose parameters are all frozen in eval mode (frozen
        batch-norm statistics; dropout off inside a frozen backbone). After `model.train()`."""
        if not self.frozen_ever:
            return
        self.set_trainable(model, epoch)
        for module in model.modules():
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
