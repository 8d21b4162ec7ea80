"""The one step loop: a `TrainStep` over a stream of batches, its sums kept on the device.

Every loop that updates weights runs its steps here: the Trainer's epochs, the self-supervised
pretrainer's, the fast recipe's, the label check's folds and the LR finder's sweep. They differ in
their batches (a loader, device-resident index batches, a cycling sweep) and in what they do between
epochs (validate, checkpoint, k-NN), not in how steps run: `run_steps` steps, sums the loss (weighted
by the batch's images) and, given a meter, the predictions, shows progress, and stops at a step
count or when `on_step` says so. Nothing reads the device but the progress bar, at its log points.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from tqdm import tqdm

from .step import StepResult, TrainStep


@dataclass
class Progress:
    """A progress bar in images: `desc`, `total` images (all processes), the loss shown every `every` steps."""

    desc: str
    total: int
    every: int = 50
    world: int = 1  # processes; each step's images count `world` times (every rank steps alike)


@dataclass
class Totals:
    """What `run_steps` summed: on the device until read."""

    loss_sum: torch.Tensor  # () sum over steps of loss x the step's images
    images: int  # images stepped on this process
    steps: int
    seconds: float

    def mean_loss(self) -> float:
        """The loss per image (one host read)."""
        return self.loss_sum.item() / max(self.images, 1)


def run_steps(step: TrainStep, batches: Iterable[tuple[torch.Tensor, ...]], *, meter: Any = None,
              until: Optional[int] = None, progress: Optional[Progress] = None,
              on_step: Optional[Callable[[StepResult], bool]] = None) -> Totals:
    """Call `step(*batch)` for each batch; stop before a batch once `step.count` reaches `until`, or after a
    step for which `on_step(result)` returns True. `meter.update(out, y)` per step when given."""
    loss_sum = torch.zeros((), device=step.device)
    images = steps = 0
    bar = tqdm(total=progress.total, unit="img", leave=False, file=sys.stderr, desc=progress.desc,
               dynamic_ncols=True) if progress is not None else None
    t0 = time.perf_counter()
    for batch in batches:
        if until is not None and step.count >= until:
            break
        res = step(*batch)
        n = len(batch[0])
        loss_sum += res.loss * n
        if meter is not None:
            meter.update(res.out, res.y)  # under mixup, accuracy counts the dominant label
        images += n
        steps += 1
        if bar is not None:
            bar.update(n * progress.world)
            if steps % progress.every == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / images:.4f}")  # deliberate sync, at log points only
        if on_step is not None and on_step(res):
            break
    if bar is not None:
        bar.close()
    return Totals(loss_sum, images, steps, time.perf_counter() - t0)
