"""Plots of robustness.json: accuracy per corruption and severity, noise/occlusion sweeps, accuracy per ε."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import atomic_path


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def plot_robustness(r: dict[str, Any], run_dir: Path) -> list[Path]:
    """Write up to three PNGs into `run_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if r.get("corruptions"):
        names = list(r["corruptions"])
        sev = sorted({s for d in r["corruptions"].values() for s in d}, key=int)
        grid = [[r["corruptions"][n].get(s, float("nan")) for s in sev] for n in names]
        fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.5))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(sev)), sev)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("severity")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_title(f"accuracy under corruption (clean {r['clean_accuracy']:.3f}, "
                     f"mean {r.get('mean_corruption_accuracy', float('nan')):.3f})")
        fig.colorbar(im, ax=ax)
        out.append(_save(fig, run_dir / "robustness_corruptions.png"))
        plt.close(fig)
    if r.get("noise") or r.get("occlusion"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        if r.get("noise"):
            xs = sorted(r["noise"], key=float)
            axes[0].plot([float(s) for s in xs], [r["noise"][s] for s in xs], "o-")
            axes[0].set(xlabel="Gaussian noise std (pixel units)", ylabel="accuracy", ylim=(0, 1.02),
                        title="noise sweep")
        if r.get("occlusion"):
            occ = r["occlusion"]
            for size, d in occ["accuracy"].items():
                axes[1].plot(range(len(d)), list(d.values()), "o-", label=f"patch {size} of side")
            axes[1].set(xlabel="patch position (row-major grid)", ylabel="accuracy", ylim=(0, 1.02),
                        title=f"occlusion sweep ({occ['grid']}x{occ['grid']} grid)")
            axes[1].legend()
        out.append(_save(fig, run_dir / "robustness_noise_occlusion.png"))
        plt.close(fig)
    if r.get("attacks"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for name, d in r["attacks"].items():
            ax = axes[0] if name.endswith("linf") else axes[1]
            xs = sorted(d, key=float)
            ax.plot([float(e) for e in xs], [d[e] for e in xs], "o-", label=name)
        for ax, norm in zip(axes, ("L-inf", "L2")):
            ax.set(xlabel=f"{norm} epsilon (pixel units)", ylabel="robust accuracy", ylim=(0, 1.02))
            ax.legend()
        title = "adversarial accuracy"
        if r.get("suspect_gradient_masking"):
            title += "  [SUSPECT: gradient masking, see warnings]"
        fig.suptitle(title)
        out.append(_save(fig, run_dir / "robustness_attacks.png"))
        plt.close(fig)
    return out
