"""Loading weights into a model: our runs, and torchvision/timm state_dicts saved as safetensors.

Every key is accounted for: loaded, adapted (stem summed over input channels), replaced
(the classifier, when the class count differs) or reported as an error. Nothing is
silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..io import load_tensors


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    head_replaced: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # model keys absent from the file (kept at init)
    unexpected: list[str] = field(default_factory=list)  # file keys the model does not have (not used)
    mismatched: list[str] = field(default_factory=list)  # "key: (file shape) vs (model shape)", kept at init

    @property
    def problems(self) -> list[str]:
        return ([f"missing: {k}" for k in self.missing] + [f"unexpected: {k}" for k in self.unexpected]
                + [f"shape: {k}" for k in self.mismatched])

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.adapted:
            parts.append(f"input channels adapted for {', '.join(self.adapted)}")
        if self.head_replaced:
            parts.append(f"classifier re-initialized ({', '.join(self.head_replaced)})")
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name} (not loaded)")
        return "; ".join(parts)


def resolve_weights_path(path: str | Path) -> Path:
    """A run folder means its best weights; a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"run folder '{path}' has no best.safetensors or last.safetensors")
    return path


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) from a safetensors file or run folder."""
    return load_tensors(resolve_weights_path(path))


def _adapt_in_chans(w: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Stem weights for another channel count: RGB->gray sums (the image's luminance feeds all
    three), gray->RGB repeats and rescales so activations keep their scale."""
    if w.shape[1] == 3 and in_chans == 1:
        return w.sum(dim=1, keepdim=True)
    return w.repeat(1, in_chans // w.shape[1] + 1, 1, 1)[:, :in_chans] * (w.shape[1] / in_chans)


def load_pretrained(model: nn.Module, source: str | Path | dict[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Load `source` into `model`; replace the classifier when its shape differs.

    Family modules may define `remap_state_dict(sd) -> sd` on the model class to translate
    torchvision/timm key names. With `strict`, any other missing, unexpected or mis-shaped
    key raises a ValueError listing all of them.
    """
    sd = source if isinstance(source, dict) else read_state_dict(source)[0]
    if hasattr(model, "remap_state_dict"):
        sd = model.remap_state_dict(dict(sd))
    own = model.state_dict()
    head = getattr(model, "classifier_name", "head") + "."
    report, new_sd = LoadReport(), {}
    stem_done = False
    for key, target in own.items():
        if key not in sd:
            (report.head_replaced if key.startswith(head) else report.missing).append(key)
            continue
        src = sd[key]
        if src.shape == target.shape:
            new_sd[key] = src.to(target.dtype)
            report.loaded.append(key)
        elif key.startswith(head):
            report.head_replaced.append(key)
        elif not stem_done and src.ndim == 4 and src.shape[0] == target.shape[0] and src.shape[2:] == target.shape[2:]:
            new_sd[key] = _adapt_in_chans(src, target.shape[1]).to(target.dtype)
            report.adapted.append(key)
            stem_done = True
        else:
            report.mismatched.append(f"{key} is {tuple(src.shape)} in the file, {tuple(target.shape)} in the model")
    report.unexpected = [k for k in sd if k not in own]
    problems = report.problems
    if problems and strict:
        raise ValueError(f"weights do not fit model '{getattr(model, 'model_name', type(model).__name__)}' "
                         f"({len(problems)} problems):\n  " + "\n  ".join(problems))
    model.load_state_dict(new_sd, strict=False)
    if report.head_replaced:
        model.reset_classifier(model.num_classes)
    return report
