"""Training engine: the loop, checkpoints, schedules, evaluation."""

from .trainer import Callback, RunResult, Trainer

__all__ = ["Callback", "RunResult", "Trainer"]
