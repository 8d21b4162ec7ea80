"""The fast recipe as a benchmark: seeded runs, each timed (CUDA events on a GPU) and held to the
recipe's accuracy floor, so that a fast wrong answer is a failure and never a record."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from ..config import FastConfig
from ..training.fast import FastData, FastRun, prepare, run_once
from ..training.step import compile_applied


class Timer:
    """Wall time of a GPU region with CUDA events (no sync until read), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self) -> "Timer":
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            import time

            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            self.end.record()
        else:
            import time

            self._seconds = time.perf_counter() - self.t0

    @property
    def seconds(self) -> float:
        if self.cuda:
            self.end.synchronize()  # deliberate sync: reading the timing
            return self.start.elapsed_time(self.end) / 1000
        return self._seconds


def bench_fast(data: FastData, cfg: FastConfig, runs: int = 10, seed: int = 0, warmup: bool = True,
               log: Any = print, run: Optional[FastRun] = None) -> dict[str, Any]:
    """`runs` seeded runs of the recipe: accuracy mean/std and seconds per run (training + TTA eval).

    A run under `cfg.min_accuracy` is a failure, not a result: it is logged as FAILED, listed under
    "failed", left out of the timing, and the result's "passed" is false. "compiled" says whether the
    step really ran through torch.compile (`step.compile_applied`), not whether it was asked for.
    On CUDA, cuDNN autotuning and compilation are warmed up by one untimed short run first,
    so the timed runs measure training, not start-up. `run`: a model `prepare`d before (its compiled graph
    reused, e.g. across epoch counts), run here with `cfg`, which must agree with it on compile.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    if data.train_x.is_cuda:
        torch.backends.cudnn.benchmark = True
    if run is None:
        run = prepare(data, cfg)
    elif run.cfg.compile != cfg.compile:
        raise ValueError(f"bench_fast: the prepared run has compile={run.cfg.compile}, the config {cfg.compile}")
    else:
        run = dataclasses.replace(run, cfg=cfg)
    if warmup:
        short = dataclasses.replace(cfg, epochs=min(cfg.epochs, 2 * cfg.batch_size / len(data.train_y) + 1))
        warm = dataclasses.replace(run, cfg=short)
        run_once(warm, data, seed=10_000)[0].item()
    accs, secs, failed = [], [], []
    for r in range(runs):
        with Timer(run.device) as t:
            correct, n = run_once(run, data, seed + r)
        accs.append(correct.item() / n.item())  # deliberate sync, after the timed region
        secs.append(t.seconds)
        if accs[-1] < cfg.min_accuracy:
            failed.append(r)
            log(f"run {r + 1}/{runs}: FAILED accuracy {accs[-1]:.4f} under the floor {cfg.min_accuracy:.4f} "
                f"(no timing reported)")
        else:
            log(f"run {r + 1}/{runs}: accuracy {accs[-1]:.4f}  {secs[-1]:.2f} s")
    acc = torch.tensor(accs, dtype=torch.float64)
    timed = torch.tensor([s for r, s in enumerate(secs) if r not in failed], dtype=torch.float64)
    compiled = compile_applied(run.step_model)
    return {"data": data.name, "runs": runs, "device": str(run.device), "config": dataclasses.asdict(cfg),
            "compiled": compiled, "compile_check": run.compile_check, "passed": not failed and compiled == cfg.compile,
            "min_accuracy": cfg.min_accuracy, "failed": failed,
            "accuracy_mean": acc.mean().item(), "accuracy_std": acc.std().item() if runs > 1 else 0.0,
            "accuracy_min": acc.min().item(), "seconds_mean": timed.mean().item() if len(timed) else None,
            "accuracies": accs, "seconds": [s if r not in failed else None for r, s in enumerate(secs)]}
