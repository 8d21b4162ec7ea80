"""The learning-rate range test (Smith 2017): raise the LR exponentially, watch the loss.

The suggestion is the LR where the smoothed loss falls fastest (steepest negative slope
against log LR), taken before the loss minimum: a common, robust reading of the curve.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..io import write_json
from .device import autocast
from .trainer import Trainer


def smooth(losses: list[float], beta: float = 0.9) -> list[float]:
    """Bias-corrected exponential moving average."""
    out, avg = [], 0.0
    for i, v in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def suggest(lrs: list[float], losses: list[float]) -> float:
    s = np.asarray(smooth(losses))
    stop = int(np.argmin(s)) + 1
    if stop < 3:
        return lrs[max(0, stop - 1)] / 10
    grad = np.gradient(s[:stop], np.log(np.asarray(lrs[:stop])))
    return float(lrs[int(np.argmin(grad))])


def lr_find(trainer: Trainer, start: float = 1e-7, end: float = 10.0, steps: int = 100) -> dict[str, Any]:
    """Sweep `steps` LRs from `start` to `end` on the trainer's model and data; write lr_find.{json,png}."""
    trainer.setup()
    model, opt, device = trainer.model, trainer.optimizer, trainer.device
    model.train()
    lrs, losses = [], []
    mult = (end / start) ** (1 / max(1, steps - 1))
    batches = iter(())
    best = math.inf
    pending = []
    for i in range(steps):
        try:
            x, y, *_ = next(batches)  # *_: group ids, when the loader yields them
        except StopIteration:
            trainer.train_loader.set_epoch(i)
            batches = iter(trainer.train_loader)
            x, y, *_ = next(batches)  # *_: group ids, when the loader yields them
        lr = start * mult**i
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, trainer.cfg.train.amp):
            loss = trainer.criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lrs.append(lr)
        pending.append(loss.detach())
        if len(pending) == 10 or i == steps - 1:  # deliberate sync every 10 steps to detect divergence
            losses += torch.stack(pending).float().cpu().tolist()
            pending = []
            best = min(best, min(smooth(losses)))
            if not math.isfinite(losses[-1]) or smooth(losses)[-1] > 4 * best:
                break
    lrs = lrs[:len(losses)]
    result = {"lrs": lrs, "losses": losses, "suggested_lr": suggest(lrs, losses)}
    write_json(trainer.run_dir / "lr_find.json", result)
    _plot(trainer.run_dir / "lr_find.png", lrs, losses, result["suggested_lr"])
    return result


def _plot(path, lrs, losses, lr) -> None:
    from ..report.plots import fig_png, plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses, alpha=0.3, label="loss")
    ax.plot(lrs, smooth(losses), label="smoothed")
    ax.axvline(lr, color="r", ls="--", label=f"suggested {lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend()
    path.write_bytes(fig_png(fig))
