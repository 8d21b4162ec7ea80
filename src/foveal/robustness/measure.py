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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..io import read_json, write_json
from .attacks import AttackSpec, PixelModel, attack_sweep
from .corruptions import CORRUPTIONS, SEVERITIES, corrupt


@dataclass
class RobustSpec:
    """What to measure; the defaults suit 28-64 px data sets (MNIST, CIFAR)."""

    corruptions: Sequence[str] = CORRUPTIONS
    severities: Sequence[int] = SEVERITIES
    noise_stds: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
    occlusion_sizes: Sequence[float] = (0.25, 0.5)  # patch side as a fraction of the image side
    occlusion_grid: int = 3  # positions per axis
    occlusion_fill: float = 0.5
    eps_linf: Sequence[float] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 0.1, 0.2, 0.3)
    eps_l2: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0)
    pgd_steps: int = 20
    attack_limit: int = 500  # attack N images (a seeded random subset) (attacks cost steps x a forward-backward each)
    batch_size: int = 256
    seed: int = 0
    skip: Sequence[str] = field(default_factory=tuple)  # any of 'corruptions', 'noise', 'occlusion', 'attacks'


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int, device: torch.device,
              transform: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None) -> float:
    """Top-1 accuracy of pixel-space `model` on (x, y), each batch optionally transformed on the device."""
    correct = torch.zeros((), device=device)
    with torch.no_grad():
        for i in range(0, len(x), bs):
            xb, yb = x[i:i + bs].to(device).float() / 255, y[i:i + bs].to(device)
            if transform is not None:
                xb = transform(xb, i)
            correct += (model(xb).argmax(1) == yb).sum()
    return float(correct) / len(x)  # one sync per call


def corruption_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: RobustSpec,
                        device: torch.device) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in spec.corruptions:
        for s in spec.severities:
            def tf(xb: torch.Tensor, i: int, name=name, s=s) -> torch.Tensor:
                g = torch.Generator(device=device).manual_seed(spec.seed * 7919 + i)  # same draws for every model
                return corrupt(xb, name, s, g)

            out.setdefault(name, {})[str(s)] = _accuracy(model, x, y, spec.batch_size, device, tf)
    return out


def noise_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: RobustSpec,
                device: torch.device) -> dict[str, float]:
    def tf_for(std: float):
        def tf(xb: torch.Tensor, i: int) -> torch.Tensor:
            g = torch.Generator(device=device).manual_seed(spec.seed + i)
            z = torch.randn(xb.shape, generator=g, device=device)
            return (xb + std * z).clamp(0, 1)
        return tf

    return {f"{s:g}": _accuracy(model, x, y, spec.batch_size, device, tf_for(s)) for s in spec.noise_stds}


def occlusion_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: RobustSpec,
                    device: torch.device) -> dict[str, Any]:
    """Accuracy with a gray square of each size at each position of a grid x grid layout."""
    H, W = x.shape[-2:]
    acc: dict[str, dict[str, float]] = {}
    for frac in spec.occlusion_sizes:
        ph, pw = max(1, round(H * frac)), max(1, round(W * frac))
        for r in range(spec.occlusion_grid):
            for c in range(spec.occlusion_grid):
                top = round(r * (H - ph) / max(spec.occlusion_grid - 1, 1))
                left = round(c * (W - pw) / max(spec.occlusion_grid - 1, 1))

                def tf(xb: torch.Tensor, i: int, top=top, left=left, ph=ph, pw=pw) -> torch.Tensor:
                    xb = xb.clone()
                    xb[..., top:top + ph, left:left + pw] = spec.occlusion_fill
                    return xb

                acc.setdefault(f"{frac:g}", {})[f"{r},{c}"] = _accuracy(model, x, y, spec.batch_size, device, tf)
    mean = {k: sum(v.values()) / len(v) for k, v in acc.items()}
    return {"fill": spec.occlusion_fill, "grid": spec.occlusion_grid, "size_is_fraction_of_side": True,
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


def evaluate_robustness(model: nn.Module, meta: dict[str, Any], images: torch.Tensor, labels: torch.Tensor,
                        spec: RobustSpec = RobustSpec(), device: torch.device | str = "cpu",
                        reference: Optional[dict[str, Any]] = None, ref_name: str = "",
                        log: Callable[[str], None] = print) -> dict[str, Any]:
    """All measurements on uint8 `images` (N, C, H, W) with `labels` (N,); returns the robustness.json dict."""
    device = torch.device(device)
    net = PixelModel(model, meta["mean"], meta["std"]).to(device).eval()
    res: dict[str, Any] = {"n": len(images), "clean_accuracy": _accuracy(net, images, labels, spec.batch_size, device)}
    log(f"clean accuracy {res['clean_accuracy']:.4f} on {len(images)} images")
    if "corruptions" not in spec.skip:
        res["corruptions"] = corruption_accuracy(net, images, labels, spec, device)
        vals = [a for d in res["corruptions"].values() for a in d.values()]
        res["mean_corruption_accuracy"] = sum(vals) / len(vals)
        log(f"mean corruption accuracy {res['mean_corruption_accuracy']:.4f}")
        if reference is not None:
            res["corruption_error"] = corruption_error(res, reference, ref_name)
    if "noise" not in spec.skip:
        res["noise"] = noise_sweep(net, images, labels, spec, device)
    if "occlusion" not in spec.skip:
        res["occlusion"] = occlusion_sweep(net, images, labels, spec, device)
    res["warnings"] = []
    if "attacks" not in spec.skip:
        n = min(spec.attack_limit, len(images))
        pick = spread_subset(labels, n, spec.seed)  # not a prefix: splits are often sorted by class
        x = images[pick].float() / 255
        attacks = (AttackSpec("fgsm", "linf"), AttackSpec("pgd", "linf", spec.pgd_steps),
                   AttackSpec("fgsm", "l2"), AttackSpec("pgd", "l2", spec.pgd_steps))
        sweep = attack_sweep(net, x, labels[pick], spec.eps_linf, spec.eps_l2, attacks, spec.batch_size, spec.seed)
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
