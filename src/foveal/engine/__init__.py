"""Training engine: the loop, checkpoints, schedules, evaluation."""

from .callbacks import Callback, RunResult
from .trainer import Trainer

__all__ = ["Callback", "RunResult", "Trainer"]
