"""The learning-rate range test (Smith 2017): raise the LR exponentially, watch the loss.

The suggestion is the LR where the smoothed loss falls fastest (steepest negative slope
against log LR), taken before the loss minimum: a common, robust reading of the curve.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from ..io import write_json
from .step import StepHook, TrainStep
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
    """Sweep `steps` LRs from `start` to `end` on the trainer's model and data; write lr_find.{json,png}.

    The trainer's own step runs each batch (autocast, channels-last, DDP, clipping), with the sweep
    in place of its schedule and without its batch hooks (mixup, perturber) or EMA."""
    trainer.setup()
    run = trainer.run
    lrs = [start * ((end / start) ** (1 / max(1, steps - 1))) ** i for i in range(steps)]

    def set_lr(i: int) -> None:
        for g in run.optimizer.param_groups:
            g["lr"] = lrs[i]

    own = run.step
    step = TrainStep(run.model, run.optimizer, own.compute, run.device,
                     dataclasses.replace(own.options, ema_decay=None), [StepHook(before=set_lr)], run.dist)
    step.wrap().train()
    losses: list[float] = []
    batches = iter(())
    best = math.inf
    pending = []
    for i in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            run.loaders.train.set_epoch(i)
            batches = iter(run.loaders.train)
            batch = next(batches)
        pending.append(step(*batch).loss)  # batch: (x, y) or (x, y, group ids)
        if len(pending) == 10 or i == steps - 1:  # deliberate sync every 10 steps to detect divergence
            losses += torch.stack(pending).float().cpu().tolist()
            pending = []
            best = min(best, min(smooth(losses)))
            if not math.isfinite(losses[-1]) or smooth(losses)[-1] > 4 * best:
                break
    lrs = lrs[:len(losses)]
    result = {"lrs": lrs, "losses": losses, "suggested_lr": suggest(lrs, losses)}
    write_json(run.run_dir / "lr_find.json", result)
    _plot(run.run_dir / "lr_find.png", lrs, losses, result["suggested_lr"])
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
