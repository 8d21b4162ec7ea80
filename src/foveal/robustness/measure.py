"""Measure a trained model's robustness and write `robustness.json` + plots into its run folder.

Schema of robustness.json (accuracies are fractions in [0, 1]; ε, std and severity keys are
strings so the file is plain JSON):

    {
      "n": 1000, "split": "test", "clean_accuracy": 0.98,
      "corruptions": {"gaussian_noise": {"1": 0.97, ..., "5": 0.61}, ...},   # 15 x 5
      "mean_corruption_accuracy": 0.83,          # mean over corruptions and severities
      "corruption_error": {                       # only with --reference RUN (Hendrycks & Dietterich 2019):
        "reference": "runs/baseline",             #   CE_c = sum_s err(model) / sum_s err(reference)
        "per_corruption": {"gaussian_noise": 0.74, ...}, "mCE": 0.81},   # mCE = mean over corruptions
      "noise": {"0": 0.98, "0.05": 0.97, ...},    # Gaussian noise std (pixel units) -> accuracy
      "occlusion": {"fill": 0.5, "grid": 3,       # gray square of `size` px at grid positions
                    "accuracy": {"8": {"0,0": 0.97, "0,1": ...}}, "mean": {"8": 0.95, ...}},
      "attacks": {"fgsm_linf": {"0.1": 0.4, ...}, "pgd_linf": {...}, "fgsm_l2": {...}, "pgd_l2": {...}},
      "attack_loss": {same keys: mean cross-entropy at the adversarial points},
      "clean_loss": 0.05, "zero_grad_fraction": 0.0, "huge_eps": {"eps": 1.0, "accuracy": 0.0},
      "warnings": ["..."],                        # gradient-masking guard (see attacks.masking_warnings)
      "suspect_gradient_masking": false           # true: the attack numbers are NOT evidence of robustness
    }

Plots: robustness_corruptions.png, robustness_noise_occlusion.png, robustness_attacks.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..card import ModelCard
from ..config import RobustConfig
from ..data.preprocess import Normalized
from ..io import read_json, write_json
from ..models.fold_bn import fold_batchnorm
from .attacks import AttackSpec, attack_sweep
from .corruptions import CORRUPTIONS, corrupt
from .draws import ImageDraws, randn

# What one batch's transform gets: the batch (B, C, H, W) in [0, 1] and the index of its first image.
Transform = Callable[[torch.Tensor, int], torch.Tensor]


def check_config(cfg: RobustConfig) -> None:
    """Raise ValueError naming what is wrong (an unknown corruption, a severity out of 1..5)."""
    unknown = [c for c in cfg.corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    bad = [s for s in cfg.severities if not 1 <= s <= 5]
    if bad:
        raise ValueError(f"corruption severities {bad} are not in 1..5")


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int, device: torch.device,
              transform: Optional[Transform] = None) -> float:
    """Top-1 accuracy of pixel-space `model` on (x, y), each batch optionally transformed on the device."""
    correct = torch.zeros((), device=device)
    with torch.no_grad():
        for i in range(0, len(x), bs):
            xb, yb = x[i:i + bs].to(device).float() / 255, y[i:i + bs].to(device)
            if transform is not None:
                xb = transform(xb, i)
            correct += (model(xb).argmax(1) == yb).sum()
    return float(correct) / len(x)  # one sync per call


def corruption_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RobustConfig, bs: int,
                        device: torch.device) -> dict[str, dict[str, float]]:
    """Accuracy per corruption and severity; image i's corruption is drawn from (seed, name, severity, i)
    alone, so every model and every batch size sees the same corrupted images."""
    out: dict[str, dict[str, float]] = {}
    for name in cfg.corruptions or CORRUPTIONS:
        for s in cfg.severities:
            def tf(xb: torch.Tensor, i: int, name=name, s=s) -> torch.Tensor:
                return corrupt(xb, name, s, ImageDraws(cfg.seed, f"{name}:{s}", range(i, i + len(xb)), device))

            out.setdefault(name, {})[str(s)] = _accuracy(model, x, y, bs, device, tf)
    return out


def noise_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RobustConfig, bs: int,
                device: torch.device) -> dict[str, float]:
    """Accuracy under Gaussian noise of each std (pixel units); the noise of image i is keyed on i."""
    def tf_for(std: float) -> Transform:
        def tf(xb: torch.Tensor, i: int) -> torch.Tensor:
            z = randn(xb.shape, ImageDraws(cfg.seed, "noise", range(i, i + len(xb)), device), device)
            return (xb + std * z).clamp(0, 1)
        return tf

    return {f"{s:g}": _accuracy(model, x, y, bs, device, tf_for(s)) for s in cfg.noise_stds}


def occlusion_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RobustConfig, bs: int,
                    device: torch.device) -> dict[str, Any]:
    """Accuracy with a gray square of each size at each position of a grid x grid layout."""
    H, W = x.shape[-2:]
    acc: dict[str, dict[str, float]] = {}
    for frac in cfg.occlusion_sizes:
        ph, pw = max(1, round(H * frac)), max(1, round(W * frac))
        for r in range(cfg.occlusion_grid):
            for c in range(cfg.occlusion_grid):
                top = round(r * (H - ph) / max(cfg.occlusion_grid - 1, 1))
                left = round(c * (W - pw) / max(cfg.occlusion_grid - 1, 1))

                def tf(xb: torch.Tensor, i: int, top=top, left=left, ph=ph, pw=pw) -> torch.Tensor:
                    xb = xb.clone()
                    xb[..., top:top + ph, left:left + pw] = cfg.occlusion_fill
                    return xb

                acc.setdefault(f"{frac:g}", {})[f"{r},{c}"] = _accuracy(model, x, y, bs, device, tf)
    mean = {k: sum(v.values()) / len(v) for k, v in acc.items()}
    return {"fill": cfg.occlusion_fill, "grid": cfg.occlusion_grid, "size_is_fraction_of_side": True,
            "accuracy": acc, "mean": mean}


def corruption_error(result: dict[str, Any], reference: dict[str, Any], ref_name: str) -> dict[str, Any]:
    """CE per corruption and mCE (Hendrycks & Dietterich 2019) against a reference model's accuracies."""
    ce = {}
    for name, accs in result["corruptions"].items():
        ref = reference.get("corruptions", {}).get(name)
        if not ref:
            continue
        err = sum(1 - a for s, a in accs.items() if s in ref)
        ref_err = sum(1 - ref[s] for s in accs if s in ref)
        ce[name] = err / max(ref_err, 1e-12)
    return {"reference": ref_name, "per_corruption": ce, "mCE": sum(ce.values()) / len(ce) if ce else None}


def evaluate_robustness(model: nn.Module, card: ModelCard, images: torch.Tensor, labels: torch.Tensor,
                        cfg: Optional[RobustConfig] = None, device: torch.device | str = "cpu",
                        reference: Optional[dict[str, Any]] = None, ref_name: str = "",
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """All measurements on uint8 `images` (N, C, H, W) with `labels` (N,); returns the robustness.json dict.

    The result does not depend on cfg.batch_size: every random draw is keyed on the image's index."""
    from ..batching import resolve_batch_size

    cfg = cfg or RobustConfig()
    check_config(cfg)
    device = torch.device(device)
    nhwc = bool(cfg.channels_last)  # None: NCHW here; `foveal robust` resolves its auto setting first
    if nhwc:  # in place, as training does: the caller's model keeps working on NCHW inputs
        model.to(memory_format=torch.channels_last)
    pre = card.preprocessing
    net = Normalized(model, pre.mean, pre.std, channels_last=nhwc).to(device).eval()  # [0, 1] pixels in
    # batch norm folded into the convs (models/fold_bn.py): the attacks' gradient passes run ~1.7x faster
    net = fold_batchnorm(net, images[:2].to(device).float() / 255)
    bs = resolve_batch_size(cfg.batch_size, net, tuple(images.shape[1:]), device)
    log(f"evaluating in batches of {bs} images")
    res: dict[str, Any] = {"n": len(images), "clean_accuracy": _accuracy(net, images, labels, bs, device)}
    log(f"clean accuracy {res['clean_accuracy']:.4f} on {len(images)} images")
    if "corruptions" not in cfg.skip:
        res["corruptions"] = corruption_accuracy(net, images, labels, cfg, bs, device)
        vals = [a for d in res["corruptions"].values() for a in d.values()]
        res["mean_corruption_accuracy"] = sum(vals) / len(vals)
        log(f"mean corruption accuracy {res['mean_corruption_accuracy']:.4f}")
        if reference is not None:
            res["corruption_error"] = corruption_error(res, reference, ref_name)
    if "noise" not in cfg.skip:
        res["noise"] = noise_sweep(net, images, labels, cfg, bs, device)
    if "occlusion" not in cfg.skip:
        res["occlusion"] = occlusion_sweep(net, images, labels, cfg, bs, device)
    res["warnings"] = []
    if "attacks" not in cfg.skip:
        n = min(cfg.attack_limit, len(images))
        pick = spread_subset(labels, n, cfg.seed)  # not a prefix: splits are often sorted by class
        x = images[pick].float() / 255
        attacks = (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", cfg.pgd_steps),
                   AttackSpec("fgsm", "l2"), AttackSpec("pgd", "l2", cfg.pgd_steps))
        sweep = attack_sweep(net, x, labels[pick], cfg.eps_linf, cfg.eps_l2, attacks, cfg.batch_size, cfg.seed)
        res.update({k: sweep[k] for k in ("attacks", "attack_loss", "clean_loss", "zero_grad_fraction", "huge_eps",
                                          "warnings", "suspect_gradient_masking")})
        res["attack_n"] = n
        for w in res["warnings"]:
            log(f"WARNING (gradient masking?): {w}")
    return res


def spread_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n indices of a seeded random draw without replacement, in increasing order: every class in
    about its share, whatever order the split comes in (folders and named test sets come sorted by
    class, where the first n would hold one or two classes). All indices when n >= len(labels)."""
    if n >= len(labels):
        return torch.arange(len(labels))
    return torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values


def write_robustness(run_dir: str | Path, result: dict[str, Any]) -> list[Path]:
    """robustness.json and its plots in `run_dir`; returns the files written."""
    run_dir = Path(run_dir)
    write_json(run_dir / "robustness.json", result)
    from .plots import plot_robustness

    return [run_dir / "robustness.json", *plot_robustness(result, run_dir)]


def load_reference(source: str | Path) -> dict[str, Any]:
    """A reference run's robustness.json (folder or file), with a clear error when missing."""
    p = Path(source)
    p = p / "robustness.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"reference '{source}' has no robustness.json; run `foveal robust {source}` first")
    return read_json(p)
