"""The learning-rate range test (Smith 2017): raise the LR exponentially, watch the loss.

The suggestion is the LR where the smoothed loss falls fastest (steepest negative slope
against log LR), taken before the loss minimum: a common, robust reading of the curve.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Optional

import numpy as np
import torch

from ..config import LRFindConfig
from ..io import write_json
from .build import Run
from .optim import Schedule, Shape
from .loop import run_steps
from .step import StepHook, StepResult, TrainStep


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


def lr_find(run: Run, start: Optional[float] = None, end: Optional[float] = None,
            steps: Optional[int] = None) -> dict[str, Any]:
    """Sweep `steps` LRs from `start` to `end` on a built run's model and data (`build_run`); write
    lr_find.{json,png} into its folder. Each one left None is LRFindConfig's (start_lr, end_lr, steps).

    The run's own step computes each batch (autocast, channels-last, DDP, clipping), with the sweep, an
    'exponential' `Shape`, in place of its schedule (every param group at the same lr) and without its
    batch hooks (mixup, perturber) or EMA."""
    d = LRFindConfig()
    start, end = d.start_lr if start is None else start, d.end_lr if end is None else end
    steps = d.steps if steps is None else steps
    sweep = Shape("exponential", steps, start=start, end=end)
    schedule = Schedule(run.optimizer, sweep, base_lr=1.0)  # the shape's factors are the lrs themselves
    own = run.step
    step = TrainStep(run.model, run.optimizer, own.compute, run.device,
                     dataclasses.replace(own.options, ema_decay=None), [StepHook(before=schedule.set_step)], run.dist)
    step.wrap().train()
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    best = math.inf

    def diverged(res: StepResult) -> bool:
        nonlocal best
        pending.append(res.loss)
        if len(pending) == 10 or step.count == steps:  # deliberate sync every 10 steps to detect divergence
            losses.extend(torch.stack(pending).float().cpu().tolist())
            pending.clear()
            best = min(best, min(smooth(losses)))
            return not math.isfinite(losses[-1]) or smooth(losses)[-1] > 4 * best
        return False

    run_steps(step, _cycle(run.loaders.train), until=steps, on_step=diverged)  # batch: (x, y) or (x, y, groups)
    lrs = [sweep.factor(i) for i in range(len(losses))]
    result = {"lrs": lrs, "losses": losses, "suggested_lr": suggest(lrs, losses)}
    write_json(run.run_dir / "lr_find.json", result)
    _plot(run.run_dir / "lr_find.png", lrs, losses, result["suggested_lr"])
    return result


def _cycle(loader: Any) -> Iterator[tuple[torch.Tensor, ...]]:
    """The loader's batches over and over, each pass reshuffled as the epoch of the step it starts at."""
    taken = 0
    while True:
        loader.set_epoch(taken)
        for batch in loader:
            taken += 1
            yield batch
        if not taken:
            raise ValueError("lr-find: the train split gives no full batch (lower train.batch_size)")


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
