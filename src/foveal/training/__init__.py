"""Training: the run builder, the one step, the epoch loop, checkpoints, optimizers and schedules."""

from .callbacks import Callback, RunResult
from .trainer import Trainer

__all__ = ["Callback", "RunResult", "Trainer"]
